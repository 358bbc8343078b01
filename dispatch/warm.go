package dispatch

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

// Warm pays the process's one-time costs of request handling up front: the
// protobuf runtime builds each message's coder on first use, and the spec
// decoders fill their reflection caches on the first spec of each kind.
// Without it the first real request of each kind carries them (about
// 0.1–0.3 ms each). Call it when a transport starts, before it reports ready.
// It is safe to call concurrently and more than once; it errs only on a bug.
func Warm() error {
	// Every request and response body, through marshal and unmarshal.
	for _, m := range []proto.Message{&pb.Request{}, &pb.Response{}} {
		if err := warmBodies(m); err != nil {
			return err
		}
	}
	// One real request of each common kind through a private dispatcher.
	c := New(Options{Server: "rewarm-warm"}).NewConn()
	sched, err := structpb.NewStruct(map[string]any{
		"kind": "cosine", "peak_lr": 1.0, "warmup_steps": 1.0, "total_steps": 4.0})
	if err != nil {
		return err
	}
	replay, err := structpb.NewStruct(map[string]any{
		"sources":           []any{map[string]any{"name": "a", "size": 8.0}, map[string]any{"name": "b", "size": 8.0}},
		"global_batch_size": 4.0,
		"stages": []any{
			map[string]any{"steps": 1.0, "mixture": map[string]any{"a": 1.0}},
			map[string]any{"steps": 1.0, "mixture": map[string]any{"a": 0.5, "b": map[string]any{"start": 0.5, "end": 0.5}}},
		}})
	if err != nil {
		return err
	}
	// The later requests name the session and sampler the earlier ones open.
	getLR := &pb.GetLR{Count: 2, Groups: []*pb.Group{{Multiplier: 1}}}
	getBatches := &pb.GetBatches{Step: 1, Count: 1, WorldSize: 2}
	getQuotas := &pb.GetQuotas{Step: 1}
	reqs := []*pb.Request{
		{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}},
		{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: sched}}},
		{Body: &pb.Request_GetLr{GetLr: getLR}},
		{Body: &pb.Request_OpenSampler{OpenSampler: &pb.OpenSampler{Spec: replay}}},
		{Body: &pb.Request_GetBatches{GetBatches: getBatches}},
		{Body: &pb.Request_GetQuotas{GetQuotas: getQuotas}},
	}
	for i, req := range reqs {
		req.Id = uint64(i + 1)
		frame, err := proto.Marshal(req)
		if err != nil {
			return err
		}
		var resp pb.Response
		if err := proto.Unmarshal(c.HandleFrame(frame), &resp); err != nil {
			return err
		}
		if e := resp.GetError(); e != nil {
			return fmt.Errorf("dispatch: warm-up request %s failed: %s", Method(req), e.GetMessage())
		}
		if s := resp.GetSession(); s != nil {
			getLR.SessionId = s.GetSessionId()
		}
		if s := resp.GetSampler(); s != nil {
			getBatches.SamplerId = s.GetSamplerId()
			getQuotas.SamplerId = s.GetSamplerId()
		}
	}
	return nil
}

// warmBodies marshals and unmarshals m once with each member of its "body"
// oneof set to an empty message.
func warmBodies(m proto.Message) error {
	md := m.ProtoReflect().Descriptor()
	body := md.Oneofs().ByName("body")
	if body == nil {
		return fmt.Errorf("dispatch: %s has no body oneof", md.FullName())
	}
	for i := 0; i < body.Fields().Len(); i++ {
		fd := body.Fields().Get(i)
		if fd.Kind() != protoreflect.MessageKind {
			continue
		}
		msg := m.ProtoReflect().New()
		msg.Set(fd, protoreflect.ValueOfMessage(msg.NewField(fd).Message()))
		b, err := proto.Marshal(msg.Interface())
		if err != nil {
			return err
		}
		if err := proto.Unmarshal(b, msg.New().Interface()); err != nil {
			return err
		}
	}
	return nil
}
