package dispatch

import (
	"encoding/binary"
	"encoding/json"
	"errors"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
	"github.com/rewarm/rewarm/replay"
)

func (d *Dispatcher) openSampler(r *pb.OpenSampler, owner uint64) (*pb.Response, error) {
	var spec map[string]any
	switch {
	case r.GetSpecJson() != "":
		// Plain json.Unmarshal gives what Struct.AsMap gives: float64
		// numbers, map[string]any objects and []any arrays.
		if err := json.Unmarshal([]byte(r.GetSpecJson()), &spec); err != nil || spec == nil {
			msg := "not a JSON object"
			if err != nil {
				msg = err.Error()
			}
			return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "spec_json", "open_sampler: spec_json: %s", msg)
		}
	case r.GetSpec() != nil:
		spec = specMap(r.GetSpec())
	default:
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "spec", "open_sampler: missing replay spec")
	}
	s, err := replay.Parse(spec)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.reserve(); err != nil {
		return nil, err
	}
	d.nextID++
	d.samplers[d.nextID] = &samplerEntry{lease: lease{owner: owner}, s: s, spec: spec}
	return samplerInfo(d.nextID, s), nil
}

func samplerInfo(id uint64, s *replay.Sampler) *pb.Response {
	info := &pb.SamplerInfo{SamplerId: id, SpecHash: s.Hash(), TotalSteps: s.TotalSteps(),
		GlobalBatchSize: s.BatchSize(), Stratified: s.Stratified()}
	for _, src := range s.Sources() {
		info.SourceNames = append(info.SourceNames, src.Name)
		info.SourceSizes = append(info.SourceSizes, src.Size)
	}
	return &pb.Response{Body: &pb.Response_Sampler{Sampler: info}}
}

// sampler looks a sampler up.
func (d *Dispatcher) sampler(id uint64) (*replay.Sampler, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.samplers[id]
	if !ok {
		return nil, fail(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "sampler_id", "no sampler with id %d", id)
	}
	return e.s, nil
}

// served records step as the sampler's latest, once a request for it has
// been answered: a refused one must not move what status shows and a
// snapshot keeps.
func (d *Dispatcher) served(id uint64, step int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.samplers[id]; ok {
		e.step = step
	}
}

func stepRange(step int64, count uint32, total int64) (int64, error) {
	n := int64(count)
	if n == 0 {
		n = 1
	}
	if step < 0 || step >= total {
		return 0, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step", "step = %d: the stages cover steps 0..%d", step, total-1)
	}
	return min(n, total-step), nil
}

func (d *Dispatcher) getBatches(r *pb.GetBatches) (*pb.Response, error) {
	s, err := d.sampler(r.GetSamplerId())
	if err != nil {
		return nil, err
	}
	n, err := stepRange(r.GetStep(), r.GetCount(), s.TotalSteps())
	if err != nil {
		return nil, err
	}
	world := int(r.GetWorldSize())
	if world == 0 {
		world = 1
	}
	B := s.BatchSize()
	if B%int64(world) != 0 {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "world_size",
			"world_size = %d: global_batch_size %d must be divisible by it", world, B)
	}
	if int(r.GetRank()) >= world {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "rank", "rank = %d: must be < world_size %d", r.GetRank(), world)
	}
	per := B / int64(world)
	if per > MaxValues {
		return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "world_size",
			"world_size = %d: each rank's batch would hold %d of the global %d indices; one request carries at most %d (use more ranks)",
			world, per, B, MaxValues)
	}
	if n*per > MaxValues {
		n = max(1, MaxValues/per)
	}
	ids := make([]int64, per)
	buf := make([]byte, 0, n*per*8)
	for i := int64(0); i < n; i++ {
		if err := s.Batch(r.GetStep()+i, int(r.GetRank()), world, ids); err != nil {
			if errors.Is(err, replay.ErrStep) {
				return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step", "%v", err)
			}
			return nil, err
		}
		for _, id := range ids {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(id))
		}
	}
	d.served(r.GetSamplerId(), r.GetStep())
	return &pb.Response{Body: &pb.Response_Batches{Batches: &pb.Batches{
		Step: r.GetStep(), Count: uint32(n), PerBatch: uint32(per), Ids: buf}}}, nil
}

func (d *Dispatcher) getQuotas(r *pb.GetQuotas) (*pb.Response, error) {
	s, err := d.sampler(r.GetSamplerId())
	if err != nil {
		return nil, err
	}
	n, err := stepRange(r.GetStep(), r.GetCount(), s.TotalSteps())
	if err != nil {
		return nil, err
	}
	K := int64(len(s.Sources()))
	if n*K > MaxValues {
		n = max(1, MaxValues/K)
	}
	out := &pb.Quotas{Step: r.GetStep(), Count: uint32(n), Sources: uint32(K), Counts: make([]int64, 0, n*K)}
	for i := int64(0); i < n; i++ {
		q, err := s.Quotas(r.GetStep() + i)
		if err != nil {
			if errors.Is(err, replay.ErrStep) {
				return nil, fail(pb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "step", "%v", err)
			}
			return nil, err
		}
		out.Counts = append(out.Counts, q...)
	}
	d.served(r.GetSamplerId(), r.GetStep())
	return &pb.Response{Body: &pb.Response_Quotas{Quotas: out}}, nil
}
