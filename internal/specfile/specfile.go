// Package specfile reads spec maps from YAML or JSON files for the CLI.
package specfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads a spec mapping from a .yaml, .yml or .json file, or from an
// inline JSON/YAML mapping when arg starts with "{".
func Load(arg string) (map[string]any, error) {
	var (
		data []byte
		ext  string
	)
	if strings.HasPrefix(strings.TrimSpace(arg), "{") {
		data, ext = []byte(arg), ".yaml" // YAML is a superset of JSON
	} else {
		b, err := os.ReadFile(arg)
		if err != nil {
			return nil, err
		}
		data, ext = b, strings.ToLower(filepath.Ext(arg))
	}
	var out map[string]any
	switch ext {
	case ".json":
		m, err := strictJSON(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", arg, err)
		}
		out = m
	case ".yaml", ".yml":
		if err := yaml.Unmarshal(data, &out); err != nil {
			return nil, fmt.Errorf("%s: %w", arg, err)
		}
	default:
		return nil, fmt.Errorf("%s: unknown extension %q (use .yaml, .yml or .json)", arg, ext)
	}
	if out == nil {
		return nil, fmt.Errorf("%s: expected a mapping at the top level", arg)
	}
	return out, nil
}

// maxDepth is encoding/json's own nesting limit.
const maxDepth = 10000

// strictJSON decodes one JSON value as a YAML file would be read: a key
// repeated within a mapping, or anything after the value, is an error, where
// encoding/json keeps the last key and stops at the first value. It returns
// nil for a value that is not a mapping.
func strictJSON(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var path []string // joined only to name a repeated key
	v, err := jsonValue(dec, &path)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the top-level mapping: a spec file holds one mapping")
	}
	m, _ := v.(map[string]any)
	return m, nil
}

func jsonValue(dec *json.Decoder, path *[]string) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'), json.Delim('['):
		if len(*path) >= maxDepth {
			return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
		}
	}
	switch tok {
	case json.Delim('{'):
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, _ := kt.(string)
			if _, dup := m[k]; dup {
				in := ""
				if len(*path) > 0 {
					in = " in " + strings.Join(*path, "")
				}
				return nil, fmt.Errorf("duplicate key %q%s", k, in)
			}
			step := "." + k
			if len(*path) == 0 {
				step = k
			}
			*path = append(*path, step)
			v, err := jsonValue(dec, path)
			*path = (*path)[:len(*path)-1]
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		_, err := dec.Token() // '}'
		return m, err
	case json.Delim('['):
		a := []any{}
		for dec.More() {
			*path = append(*path, fmt.Sprintf("[%d]", len(a)))
			v, err := jsonValue(dec, path)
			*path = (*path)[:len(*path)-1]
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token() // ']'
		return a, err
	}
	return tok, nil
}
