package specfield

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func reflectTypeOf(v any) reflect.Type { return reflect.TypeOf(v) }

type inner struct {
	A float64 `spec:"a,required"`
}

type sample struct {
	F    float64            `spec:"f"`
	I    int64              `spec:"i"`
	S    string             `spec:"s"`
	B    bool               `spec:"b"`
	Opt  *float64           `spec:"opt"`
	List []float64          `spec:"list"`
	In   inner              `spec:"in"`
	Ins  []inner            `spec:"ins"`
	Mix  map[string]float64 `spec:"mix"`
	Req  int                `spec:"req,required"`
	skip int
}

func TestDecodeTypes(t *testing.T) {
	var out sample
	m := map[string]any{
		"f": 1.5, "i": 7.0, "s": "x", "b": true, "opt": 2, "list": []any{1, 2.5},
		"in": map[string]any{"a": 3}, "ins": []any{map[any]any{"a": 4}},
		"mix": map[string]any{"p": 0.25}, "req": json.Number("9"),
	}
	if err := Decode("t", m, &out); err != nil {
		t.Fatal(err)
	}
	if out.F != 1.5 || out.I != 7 || out.S != "x" || !out.B || out.Opt == nil || *out.Opt != 2 ||
		len(out.List) != 2 || out.List[1] != 2.5 || out.In.A != 3 || out.Ins[0].A != 4 || out.Mix["p"] != 0.25 || out.Req != 9 {
		t.Fatalf("decoded %+v", out)
	}
	enc := Encode(&out)
	var back sample
	if err := Decode("t", enc, &back); err != nil {
		t.Fatalf("re-decode of %v: %v", enc, err)
	}
	if back.F != out.F || back.In.A != out.In.A || back.Req != out.Req || *back.Opt != *out.Opt {
		t.Fatalf("round trip %+v != %+v", back, out)
	}
	if _, ok := Encode(&sample{Req: 1})["opt"]; ok {
		t.Fatal("nil optional field should be omitted")
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		m     map[string]any
		field string
		text  string
	}{
		{map[string]any{"req": 1, "i": 1.5}, "i", "not an integer"},
		{map[string]any{"req": 1, "f": "1"}, "f", "not a number"},
		{map[string]any{"req": 1, "typo": 1}, "typo", "unknown field"},
		{map[string]any{}, "req", "missing required"},
		{map[string]any{"req": 1, "in": map[string]any{}}, "in.a", "missing required"},
		{map[string]any{"req": 1, "ins": []any{map[string]any{"a": "x"}}}, "ins[0].a", "not a number"},
		{map[string]any{"req": 1, "list": 3}, "list", "not a list"},
		{map[string]any{"req": 1, "b": 1}, "b", "not a boolean"},
		{map[string]any{"req": 1, "s": nil}, "s", "null"},
		{map[string]any{"req": 1, "i": 1e20}, "i", "too large"},
		{map[string]any{"req": 1, "i": 5e18}, "i", "up to 2^53"},
	}
	for _, c := range cases {
		var out sample
		err := Decode("t", c.m, &out)
		var fe *Error
		if !errors.As(err, &fe) {
			t.Errorf("%v: got %v, want *Error", c.m, err)
			continue
		}
		if fe.Field != c.field || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%v: got field %q message %q, want field %q containing %q", c.m, fe.Field, err, c.field, c.text)
		}
	}
}

func TestIgnoreKeys(t *testing.T) {
	var out sample
	if err := Decode("t", map[string]any{"kind": "x", "req": 1}, &out, "kind"); err != nil {
		t.Fatal(err)
	}
}

type shared struct {
	W int64 `spec:"w"`
}

type withEmbedded struct {
	shared
	X float64 `spec:"x,required"`
}

func TestEmbeddedStructsAreFlattened(t *testing.T) {
	var out withEmbedded
	if err := Decode("t", map[string]any{"w": 3, "x": 1.5}, &out); err != nil {
		t.Fatal(err)
	}
	if out.W != 3 || out.X != 1.5 {
		t.Fatalf("%+v", out)
	}
	enc := Encode(&out)
	if enc["w"] != int64(3) || enc["x"] != 1.5 {
		t.Fatalf("encode %v", enc)
	}
	if got := Fields(reflectTypeOf(out)); strings.Join(got, ",") != "w,x" {
		t.Fatalf("fields %v", got)
	}
}

// An error message goes out in a protobuf string field, which must be UTF-8:
// a long value is cut at a character boundary (cutting the JSON of ["é"·100]
// at byte 117 split an é, and the reply failed to encode). Long strings are
// cut too, so a 1 MB name does not come back whole in every message.
func TestFormatValueCutsLongValuesAtACharacter(t *testing.T) {
	for _, v := range []any{
		[]any{strings.Repeat("é", 100)},
		map[string]any{"k": strings.Repeat("日本", 80)},
		[]any{strings.Repeat("a", 116) + "é"},
		[]any{strings.Repeat("é", 200)},
		strings.Repeat("é", 300),
		strings.Repeat("x", 1<<20),
	} {
		got := FormatValue(v)
		if !utf8.ValidString(got) {
			t.Fatalf("%.40v...: %q is not UTF-8", v, got)
		}
		if n := utf8.RuneCountInString(got); n > 120 || n > 104 && !strings.HasSuffix(got, "...") {
			t.Fatalf("%.40v...: %d characters, %q", v, utf8.RuneCountInString(got), got)
		}
	}
	if got := FormatValue([]any{"é"}); got != `["é"]` {
		t.Fatalf("a short value: %q", got)
	}
	if got := FormatValue("nan"); got != `"nan"` {
		t.Fatalf("a short string: %q", got)
	}
}
