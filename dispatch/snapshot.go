package dispatch

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/rewarm/rewarm/sched"
)

// snapshotFormat is bumped when the payload layout changes incompatibly.
const snapshotFormat = 1

// envelope wraps a msgpack payload with its format and a checksum, so a
// truncated or edited blob is refused instead of restoring a wrong schedule.
type envelope struct {
	Format  int    `msgpack:"format"`
	Payload []byte `msgpack:"payload"`
	CRC32   uint32 `msgpack:"crc32"`
}

// sessionState is everything needed to recreate a session: the rates are a
// pure function of (spec, re-plans, reports, step).
type sessionState struct {
	Spec    map[string]any `msgpack:"spec"`
	Replans []sched.Replan `msgpack:"replans"`
	Reports []sched.Report `msgpack:"reports"`
	Step    int64          `msgpack:"step"`
	Name    string         `msgpack:"name"`
}

// marshalSorted encodes with map keys sorted, so equal states give equal bytes.
func marshalSorted(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encodeSnapshot(st sessionState) ([]byte, error) {
	payload, err := marshalSorted(&st)
	if err != nil {
		return nil, fmt.Errorf("encode session state: %w", err)
	}
	return marshalSorted(&envelope{Format: snapshotFormat, Payload: payload, CRC32: crc32.ChecksumIEEE(payload)})
}

var errSnapshot = errors.New("invalid snapshot")

func decodeSnapshot(blob []byte) (sessionState, error) {
	var env envelope
	if err := msgpack.Unmarshal(blob, &env); err != nil {
		return sessionState{}, fmt.Errorf("%w: not a rewarm state blob (%v)", errSnapshot, err)
	}
	if env.Format != snapshotFormat {
		return sessionState{}, fmt.Errorf("%w: format %d, this build reads format %d", errSnapshot, env.Format, snapshotFormat)
	}
	if got := crc32.ChecksumIEEE(env.Payload); got != env.CRC32 {
		return sessionState{}, fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x): the blob is corrupt", errSnapshot, env.CRC32, got)
	}
	var st sessionState
	if err := msgpack.Unmarshal(env.Payload, &st); err != nil {
		return sessionState{}, fmt.Errorf("%w: payload: %v", errSnapshot, err)
	}
	if st.Spec == nil {
		return sessionState{}, fmt.Errorf("%w: no schedule spec", errSnapshot)
	}
	if st.Step < 0 {
		return sessionState{}, fmt.Errorf("%w: negative step %d", errSnapshot, st.Step)
	}
	return st, nil
}
