// Package specfield decodes loosely typed spec maps (from JSON, YAML or a
// protobuf Struct) into typed Go structs, with errors that name the offending
// field and value.
//
// Struct fields opt in with a tag `spec:"name"` or `spec:"name,required"`.
// Numbers may arrive as float64 (JSON, protobuf Struct), any Go integer type
// (YAML) or json.Number; integer fields accept a float only when it is
// integral, so `total_steps: 1000.0` works and `total_steps: 10.5` does not.
// Keys without a matching field are rejected, which catches typos such as
// `warmup: 100` for `warmup_steps`.
package specfield

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Error names the spec (kind), the field and the value that was refused.
type Error struct {
	Kind   string // spec kind, for example "cosine"
	Field  string // dotted field path, for example "stages[1].peak_lr"
	Value  any    // offending value; nil when the field is missing
	Reason string
}

func (e *Error) Error() string {
	prefix := e.Kind
	if prefix == "" {
		prefix = "spec"
	}
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", prefix, e.Reason)
	}
	if e.Value == nil {
		return fmt.Sprintf("%s: field %q: %s", prefix, e.Field, e.Reason)
	}
	return fmt.Sprintf("%s: field %q = %s: %s", prefix, e.Field, FormatValue(e.Value), e.Reason)
}

// FormatValue renders a spec value the way a user wrote it (NaN as NaN,
// strings quoted).
func FormatValue(v any) string {
	switch x := v.(type) {
	case string:
		return cut(strconv.Quote(x))
	case float64:
		return formatFloat(x)
	case float32:
		return formatFloat(float64(x))
	case map[string]any, []any:
		// As the user wrote it (JSON), not Go's map[k:v]; long ones cut.
		if b, err := json.Marshal(x); err == nil {
			return cut(string(b))
		}
		return fmt.Sprintf("%v", v)
	default:
		return fmt.Sprintf("%v", v)
	}
}

// cut shortens s to 117 characters and "..." when it is over 120, at a
// character boundary: messages travel in protobuf strings, which must be
// UTF-8.
func cut(s string) string {
	if utf8.RuneCountInString(s) <= 120 {
		return s
	}
	n := 0
	for i := range s {
		if n == 117 {
			return s[:i] + "..."
		}
		n++
	}
	return s
}

func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return fmt.Sprintf("%g", f)
}

// Errorf builds an *Error for a field.
func Errorf(kind, field string, value any, format string, args ...any) *Error {
	return &Error{Kind: kind, Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

type tagInfo struct {
	name     string
	required bool
}

func parseTag(f reflect.StructField) (tagInfo, bool) {
	tag, ok := f.Tag.Lookup("spec")
	if !ok || tag == "-" {
		return tagInfo{}, false
	}
	parts := strings.Split(tag, ",")
	ti := tagInfo{name: parts[0]}
	for _, p := range parts[1:] {
		if p == "required" {
			ti.required = true
		}
	}
	return ti, true
}

type fieldRef struct {
	index []int
	tag   tagInfo
}

// structInfo is what decoding needs to know about a struct type.
type structInfo struct {
	fields   []fieldRef
	byName   map[string][]int
	required []string
	names    string // sorted, comma-separated, for unknown-field errors
}

// structInfos caches structInfo by reflect.Type, as encoding/json caches its
// encoders: walking struct tags dominated the cost of decoding a spec.
var structInfos sync.Map // reflect.Type -> *structInfo

func infoOf(t reflect.Type) *structInfo {
	if v, ok := structInfos.Load(t); ok {
		return v.(*structInfo)
	}
	si := &structInfo{fields: collectFields(t), byName: map[string][]int{}}
	names := make([]string, 0, len(si.fields))
	for _, f := range si.fields {
		si.byName[f.tag.name] = f.index
		names = append(names, f.tag.name)
		if f.tag.required {
			si.required = append(si.required, f.tag.name)
		}
	}
	sort.Strings(names)
	si.names = strings.Join(names, ", ")
	v, _ := structInfos.LoadOrStore(t, si)
	return v.(*structInfo)
}

// fieldsOf lists a struct type's spec fields in declaration order.
func fieldsOf(t reflect.Type) []fieldRef { return infoOf(t).fields }

// collectFields walks a struct type's spec fields in declaration order.
// Embedded structs without a spec tag are flattened, so kinds can share field
// groups (such as warmup) by embedding them.
func collectFields(t reflect.Type) []fieldRef {
	var out []fieldRef
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if _, tagged := f.Tag.Lookup("spec"); !tagged && f.Anonymous && f.Type.Kind() == reflect.Struct {
			for _, sub := range collectFields(f.Type) {
				out = append(out, fieldRef{index: append([]int{i}, sub.index...), tag: sub.tag})
			}
			continue
		}
		if ti, ok := parseTag(f); ok {
			out = append(out, fieldRef{index: []int{i}, tag: ti})
		}
	}
	return out
}

// Fields lists the spec field names of a struct type, in declaration order.
func Fields(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	for _, f := range fieldsOf(t) {
		names = append(names, f.tag.name)
	}
	return names
}

// Decode fills the struct pointed to by dst from m. Keys listed in ignore
// (such as "kind") are skipped. kind only labels errors.
func Decode(kind string, m map[string]any, dst any, ignore ...string) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("specfield: Decode needs a pointer to a struct, got %T", dst)
	}
	return decodeStruct(kind, "", m, rv.Elem(), ignore)
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func decodeStruct(kind, prefix string, m map[string]any, sv reflect.Value, ignore []string) error {
	si := infoOf(sv.Type())
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if contains(ignore, k) {
			continue
		}
		idx, ok := si.byName[k]
		if !ok {
			return &Error{Kind: kind, Field: join(prefix, k), Value: m[k],
				Reason: fmt.Sprintf("unknown field (known fields: %s)", si.names)}
		}
		if err := decodeValue(kind, join(prefix, k), m[k], sv.FieldByIndex(idx)); err != nil {
			return err
		}
	}
	for _, r := range si.required {
		if _, ok := m[r]; !ok {
			return &Error{Kind: kind, Field: join(prefix, r), Reason: "missing required field"}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// number extracts a float64 from any numeric representation.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

// integer extracts an int64 of magnitude at most 2^53, from an integer or an
// integral float: the most a spec carries exactly over the wire (a JSON or
// protobuf number is a float64), so a YAML file given to the CLI takes no
// more than the same spec sent by a client.
func integer(v any) (int64, bool) {
	i, ok := anyInteger(v)
	if !ok || i > 1<<53 || i < -(1<<53) {
		return 0, false
	}
	return i, true
}

func anyInteger(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint:
		if uint64(x) > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, true
		}
	}
	f, ok := number(v)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

func decodeValue(kind, path string, v any, fv reflect.Value) error {
	if fv.Kind() == reflect.Pointer {
		if v == nil {
			fv.Set(reflect.Zero(fv.Type()))
			return nil
		}
		nv := reflect.New(fv.Type().Elem())
		if err := decodeValue(kind, path, v, nv.Elem()); err != nil {
			return err
		}
		fv.Set(nv)
		return nil
	}
	if v == nil {
		return &Error{Kind: kind, Field: path, Reason: "value is null"}
	}
	switch fv.Kind() {
	case reflect.Float64, reflect.Float32:
		f, ok := number(v)
		if !ok {
			return &Error{Kind: kind, Field: path, Value: v, Reason: "not a number"}
		}
		fv.SetFloat(f)
	case reflect.Int, reflect.Int64, reflect.Int32:
		i, ok := integer(v)
		if !ok {
			reason := "not an integer"
			if f, isNum := number(v); isNum && f == math.Trunc(f) && !math.IsInf(f, 0) {
				// A float64 counts exactly only up to 2^53.
				reason = "too large: integers are carried exactly only up to 2^53 = 9007199254740992"
			}
			return &Error{Kind: kind, Field: path, Value: v, Reason: reason}
		}
		if fv.OverflowInt(i) {
			return &Error{Kind: kind, Field: path, Value: v, Reason: "integer out of range"}
		}
		fv.SetInt(i)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return &Error{Kind: kind, Field: path, Value: v, Reason: "not a string"}
		}
		fv.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return &Error{Kind: kind, Field: path, Value: v, Reason: "not a boolean"}
		}
		fv.SetBool(b)
	case reflect.Slice:
		items, ok := v.([]any)
		if !ok {
			return &Error{Kind: kind, Field: path, Value: v, Reason: "not a list"}
		}
		out := reflect.MakeSlice(fv.Type(), len(items), len(items))
		for i, it := range items {
			if err := decodeValue(kind, fmt.Sprintf("%s[%d]", path, i), it, out.Index(i)); err != nil {
				return err
			}
		}
		fv.Set(out)
	case reflect.Map:
		mm, ok := AsMap(v)
		if !ok {
			return &Error{Kind: kind, Field: path, Value: v, Reason: "not a mapping"}
		}
		if fv.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("specfield: map field %s must have string keys", path)
		}
		out := reflect.MakeMapWithSize(fv.Type(), len(mm))
		for _, k := range slices.Sorted(maps.Keys(mm)) { // the first bad key named is the same every time
			it := mm[k]
			ev := reflect.New(fv.Type().Elem()).Elem()
			if err := decodeValue(kind, path+"."+k, it, ev); err != nil {
				return err
			}
			out.SetMapIndex(reflect.ValueOf(k), ev)
		}
		fv.Set(out)
	case reflect.Struct:
		mm, ok := AsMap(v)
		if !ok {
			return &Error{Kind: kind, Field: path, Value: v, Reason: "not a mapping"}
		}
		return decodeStruct(kind, path, mm, fv, nil)
	case reflect.Interface:
		fv.Set(reflect.ValueOf(v))
	default:
		return fmt.Errorf("specfield: unsupported field type %s at %s", fv.Type(), path)
	}
	return nil
}

// AsMap accepts map[string]any and the map[any]any some YAML decoders produce.
func AsMap(v any) (map[string]any, bool) {
	switch x := v.(type) {
	case map[string]any:
		return x, true
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			ks, ok := k.(string)
			if !ok {
				return nil, false
			}
			out[ks] = val
		}
		return out, true
	}
	return nil, false
}

// Encode renders a tagged struct back into a map, the inverse of Decode.
// Nil pointers are omitted, so optional fields that were absent stay absent.
func Encode(src any) map[string]any {
	rv := reflect.ValueOf(src)
	for rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	out, _ := encodeValue(rv).(map[string]any)
	return out
}

func encodeValue(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return encodeValue(v.Elem())
	case reflect.Struct:
		out := map[string]any{}
		for _, f := range fieldsOf(v.Type()) {
			fv := v.FieldByIndex(f.index)
			if (fv.Kind() == reflect.Pointer || fv.Kind() == reflect.Interface ||
				fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map) && fv.IsNil() {
				continue
			}
			out[f.tag.name] = encodeValue(fv)
		}
		return out
	case reflect.Slice:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = encodeValue(v.Index(i))
		}
		return out
	case reflect.Map:
		out := make(map[string]any, v.Len())
		iter := v.MapRange()
		for iter.Next() {
			// fmt.Sprint: Value.String of an interface key is "<interface {} Value>".
			out[fmt.Sprint(iter.Key().Interface())] = encodeValue(iter.Value())
		}
		return out
	case reflect.Float32, reflect.Float64:
		return v.Float()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int()
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return v.Bool()
	}
	return v.Interface()
}
