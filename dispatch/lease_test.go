package dispatch

import (
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/replay"
)

// clocked is a dispatcher on a clock the test moves.
func clocked(opts Options) (*Dispatcher, *time.Time) {
	d := New(opts)
	now := time.Unix(1e9, 0)
	d.now = func() time.Time { return now }
	return d, &now
}

func greet(t *testing.T, d *Dispatcher) *Conn {
	t.Helper()
	c := d.NewConn()
	if r := c.Handle(&pb.Request{Body: &pb.Request_Hello{Hello: &pb.Hello{ProtocolVersion: ProtocolVersion}}}); r.GetHello() == nil {
		t.Fatal(r)
	}
	return c
}

func openSampler(t *testing.T, c *Conn) uint64 {
	t.Helper()
	st, err := structpb.NewStruct(samplerSpec)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Handle(&pb.Request{Body: &pb.Request_OpenSampler{OpenSampler: &pb.OpenSampler{Spec: st}}})
	if r.GetSampler() == nil {
		t.Fatal(r)
	}
	return r.GetSampler().GetSamplerId()
}

func held(d *Dispatcher) (sessions, samplers int) {
	st := d.Status()
	return len(st.GetSessions()), len(st.GetSamplers())
}

func TestClosedConnectionObjectsWaitThenGo(t *testing.T) {
	d, now := clocked(Options{OrphanTTL: time.Minute})
	a, b := greet(t, d), greet(t, d)
	sa, xa := open(t, a, cosineSpec), openSampler(t, a)
	open(t, b, cosineSpec)
	a.Close()
	if s, x := held(d); s != 2 || x != 1 {
		t.Fatalf("right after the close: %d sessions, %d samplers; want 2 and 1", s, x)
	}
	// A client that reconnects within the TTL finds its session and takes it.
	*now = now.Add(30 * time.Second)
	c := greet(t, d)
	if r := getLR(c, sa, 0, 1); r.GetLr() == nil {
		t.Fatalf("reclaim: %v", r)
	}
	*now = now.Add(2 * time.Minute)
	if s, x := held(d); s != 2 || x != 0 {
		t.Fatalf("past the TTL: %d sessions, %d samplers; want 2 (b's, and a's claimed by c) and 0", s, x)
	}
	r := c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: xa, Step: 0}}})
	if r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("the unclaimed sampler should be gone: %v", r)
	}
	c.Close()
	*now = now.Add(2 * time.Minute)
	if s, _ := held(d); s != 1 {
		t.Fatalf("after c closed and the TTL passed: %d sessions, want b's only", s)
	}
}

func TestOrphansDoNotStarveOtherClients(t *testing.T) {
	d, now := clocked(Options{MaxSessions: 4, OrphanTTL: time.Minute})
	a := greet(t, d)
	for i := 0; i < 4; i++ {
		open(t, a, cosineSpec)
	}
	a.Close()
	b := greet(t, d)
	st, _ := structpb.NewStruct(cosineSpec)
	req := &pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: st}}}
	r := b.Handle(req)
	if r.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_RESOURCE_EXHAUSTED || !strings.Contains(r.GetError().GetMessage(), "4 sessions, 0 samplers, limit 4") {
		t.Fatalf("within the TTL the table is full: %v", r)
	}
	*now = now.Add(time.Minute)
	if r := b.Handle(req); r.GetSession() == nil {
		t.Fatalf("past the TTL the orphans make room: %v", r)
	}
}

func TestRestoredObjectsAreOrphansUntilUsed(t *testing.T) {
	src := New(Options{})
	c := greet(t, src)
	used, unused := open(t, c, cosineSpec), openSampler(t, c)
	blob, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	d, now := clocked(Options{OrphanTTL: time.Minute})
	if err := d.Restore(blob); err != nil {
		t.Fatal(err)
	}
	c2 := greet(t, d)
	getLR(c2, used, 0, 1)
	*now = now.Add(time.Hour)
	if s, x := held(d); s != 1 || x != 0 {
		t.Fatalf("%d sessions, %d samplers: want the used session only (sampler %d unclaimed)", s, x, unused)
	}
}

// Status reads each sampler's last step while GetBatches writes it.
// Status says how long no client has held each session: 0 while one does,
// the time since its connection closed after that, and 0 again once a
// client takes it back.
func TestStatusShowsOrphanedSessions(t *testing.T) {
	d, now := clocked(Options{OrphanTTL: time.Hour})
	a, b := greet(t, d), greet(t, d)
	sa := open(t, a, cosineSpec)
	open(t, b, cosineSpec)
	orphaned := func() []float64 {
		var out []float64
		for _, s := range d.Status().GetSessions() {
			out = append(out, s.GetOrphanedSeconds())
		}
		return out
	}
	if o := orphaned(); len(o) != 2 || o[0] != 0 || o[1] != 0 {
		t.Fatalf("both held: %v", o)
	}
	a.Close()
	*now = now.Add(90 * time.Second)
	if o := orphaned(); o[0] != 90 || o[1] != 0 {
		t.Fatalf("a closed 90 s ago: %v, want [90 0]", o)
	}
	c := greet(t, d)
	if r := getLR(c, sa, 0, 1); r.GetLr() == nil {
		t.Fatal(r)
	}
	if o := orphaned(); o[0] != 0 {
		t.Fatalf("taken back: %v", o)
	}
}

func TestStatusRacesNoGetBatches(t *testing.T) {
	d := New(Options{})
	c, s := greet(t, d), greet(t, d)
	id := openSampler(t, c)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := int64(0); i < 200; i++ {
			c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: id, Step: i % 10}}})
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			s.Handle(&pb.Request{Body: &pb.Request_GetStatus{GetStatus: &pb.GetStatus{}}})
		}
	}()
	wg.Wait()
}

func TestOversizedRequestsNameTheirField(t *testing.T) {
	c := greet(t, New(Options{}))
	st, _ := structpb.NewStruct(cosineSpec)
	r := c.Handle(&pb.Request{Body: &pb.Request_Preview{Preview: &pb.Preview{Schedule: st, Start: 5, Count: 3, Stride: 1 << 62}}})
	if r.GetError().GetField() != "stride" || !strings.Contains(r.GetError().GetMessage(), "stride 4611686018427387904") {
		t.Fatalf("preview overflow: %v", r)
	}
	big := map[string]any{"sources": []any{map[string]any{"name": "a", "size": 1e9}}, "global_batch_size": float64(MaxValues * 2),
		"stages": []any{map[string]any{"steps": 5.0, "mixture": map[string]any{"a": 1.0}}}}
	sst, _ := structpb.NewStruct(big)
	// A global batch is fetched whole (global_batch) in one request: a spec
	// whose batch could not be is refused when opened, naming the field.
	r = c.Handle(&pb.Request{Body: &pb.Request_OpenSampler{OpenSampler: &pb.OpenSampler{Spec: sst}}})
	if r.GetError().GetField() != "global_batch_size" || !strings.Contains(r.GetError().GetMessage(), "2097152") {
		t.Fatalf("a global batch over the request cap: %v", r)
	}
	if replay.MaxGlobalBatch > MaxValues {
		t.Fatalf("replay.MaxGlobalBatch %d exceeds what one request carries (%d)", replay.MaxGlobalBatch, MaxValues)
	}
	big["global_batch_size"] = float64(replay.MaxGlobalBatch)
	sst, _ = structpb.NewStruct(big)
	id := c.Handle(&pb.Request{Body: &pb.Request_OpenSampler{OpenSampler: &pb.OpenSampler{Spec: sst}}}).GetSampler().GetSamplerId()
	if r := c.Handle(&pb.Request{Body: &pb.Request_GetBatches{GetBatches: &pb.GetBatches{SamplerId: id, WorldSize: 1}}}); len(r.GetBatches().GetIds()) != 8*replay.MaxGlobalBatch {
		t.Fatalf("the largest global batch in one request: %v", r.GetError())
	}
}
