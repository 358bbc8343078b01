package dispatch

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/rewarm/rewarm/sched"
)

// snapshotFormat is bumped when the payload layout changes incompatibly.
const snapshotFormat = 1

// envelope wraps a msgpack payload with its format, what it holds and a
// checksum, so a truncated or edited blob is refused instead of restoring a
// wrong schedule.
type envelope struct {
	Format  int    `msgpack:"format"`
	Kind    string `msgpack:"kind"`
	Payload []byte `msgpack:"payload"`
	CRC32   uint32 `msgpack:"crc32"`
}

const (
	kindSession = "session"
	kindSidecar = "sidecar"
)

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

func seal(kind string, v any) ([]byte, error) {
	payload, err := marshalSorted(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s state: %w", kind, err)
	}
	return marshalSorted(&envelope{Format: snapshotFormat, Kind: kind, Payload: payload, CRC32: crc32.ChecksumIEEE(payload)})
}

// ErrSnapshot reports a state blob that cannot be restored.
var ErrSnapshot = errors.New("invalid snapshot")

func unseal(kind string, blob []byte, v any) error {
	var env envelope
	if err := checkShape(blob); err != nil {
		return fmt.Errorf("%w: not a rewarm state blob (%v)", ErrSnapshot, err)
	}
	if err := msgpack.Unmarshal(blob, &env); err != nil {
		return fmt.Errorf("%w: not a rewarm state blob (%v)", ErrSnapshot, err)
	}
	if env.Format != snapshotFormat {
		return fmt.Errorf("%w: format %d, this build reads format %d", ErrSnapshot, env.Format, snapshotFormat)
	}
	if env.Kind != kind {
		return fmt.Errorf("%w: holds %q state, expected %q", ErrSnapshot, env.Kind, kind)
	}
	if got := crc32.ChecksumIEEE(env.Payload); got != env.CRC32 {
		return fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x): the blob is corrupt", ErrSnapshot, env.CRC32, got)
	}
	if err := checkShape(env.Payload); err != nil {
		return fmt.Errorf("%w: payload: %v", ErrSnapshot, err)
	}
	if err := msgpack.Unmarshal(env.Payload, v); err != nil {
		return fmt.Errorf("%w: payload: %v", ErrSnapshot, err)
	}
	// msgpack takes any bytes as a string, protobuf refuses to send one that
	// is not UTF-8: such a name would be restored and then fail every reply
	// that carries it (the restore's, every status), and the checksum guards
	// against accidents only.
	if at, bad := badString(reflect.ValueOf(v), "state"); bad {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrSnapshot, at)
	}
	return nil
}

// badString finds a string that is not valid UTF-8 in v (map keys too) and
// returns where it lies, built only on the way out: the walk runs on every
// restore, over blobs of 200,000 norms.
func badString(v reflect.Value, at string) (string, bool) {
	switch v.Kind() {
	case reflect.String:
		return at, !utf8.ValidString(v.String())
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return badString(v.Elem(), at)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 { // bytes, not text
			return "", false
		}
		for i := range v.Len() {
			if where, bad := badString(v.Index(i), ""); bad {
				return fmt.Sprintf("%s[%d]%s", at, i, where), true
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if _, bad := badString(it.Key(), ""); bad {
				return at + " (a key)", true
			}
			if where, bad := badString(it.Value(), ""); bad {
				// The key is valid UTF-8: it may go in the message.
				return fmt.Sprintf("%s.%v%s", at, it.Key(), where), true
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range v.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			if where, bad := badString(v.Field(i), ""); bad {
				name, _, _ := strings.Cut(f.Tag.Get("msgpack"), ",")
				if name == "" {
					name = f.Name
				}
				return at + "." + name + where, true
			}
		}
	}
	return "", false
}

func encodeSnapshot(st sessionState) ([]byte, error) { return seal(kindSession, &st) }

func decodeSnapshot(blob []byte) (sessionState, error) {
	var st sessionState
	if err := unseal(kindSession, blob, &st); err != nil {
		return sessionState{}, err
	}
	if st.Spec == nil {
		return sessionState{}, fmt.Errorf("%w: no schedule spec", ErrSnapshot)
	}
	if st.Step < 0 {
		return sessionState{}, fmt.Errorf("%w: negative step %d", ErrSnapshot, st.Step)
	}
	return st, nil
}

// dispatcherState is a whole dispatcher: what the sidecar snapshots.
type dispatcherState struct {
	NextID   uint64         `msgpack:"next_id"`
	Sessions []savedSession `msgpack:"sessions"`
	Samplers []savedSampler `msgpack:"samplers"`
	CtlSeq   uint64         `msgpack:"control_seq"`
	CtlEpoch uint64         `msgpack:"control_epoch"`
	Controls [][]byte       `msgpack:"controls"`
}

type savedSession struct {
	ID    uint64       `msgpack:"id"`
	State sessionState `msgpack:"state"`
	// CtlStart is where the job's controls start (session.ctlStart), for a
	// client that moves the session over before it ever polled.
	CtlStart uint64 `msgpack:"control_start,omitempty"`
}

type savedSampler struct {
	ID   uint64         `msgpack:"id"`
	Spec map[string]any `msgpack:"spec"`
	Step int64          `msgpack:"step"`
}
