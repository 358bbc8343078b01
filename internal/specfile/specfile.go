// Package specfile reads spec maps from YAML or JSON files for the CLI.
package specfile

import (
	"bytes"
	"encoding/json"
	"fmt"
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
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&out); err != nil {
			return nil, fmt.Errorf("%s: %w", arg, err)
		}
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
