package config

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decoder fills a Go value from a YAML node tree and records every problem
// with its key path, so one pass reports all unknown keys and bad values
// instead of stopping at the first.
type decoder struct {
	errs Errors
	// steps counts nodes visited. Aliases can make a small file expand
	// exponentially ("billion laughs"), so decoding stops at maxSteps.
	steps int
	// aliased is set once an alias has been followed, to name the cause
	// when steps reaches maxSteps.
	aliased bool
}

const maxSteps = 200000

func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	if path == "" {
		// The document root has no key; name it the way Parse does.
		path = "(file)"
	}
	d.errs = append(d.errs, FieldError{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// decode fills v (addressable) from n.
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) {
	d.steps++
	if d.steps == maxSteps {
		if d.aliased {
			d.fail(path, n, "the document expands to more than %d values through aliases", maxSteps)
		} else {
			d.fail(path, n, "the document has more than %d values", maxSteps)
		}
	}
	if d.steps >= maxSteps {
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
		d.aliased = true
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an explicit null leaves the zero value
	}

	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(path, n, v.Elem())
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(path, n, "%s", err)
		}
		return
	}

	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(path, n, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(path, n, "expected a list, got a %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(index(path, i), item, s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(path, n, "expected a mapping, got a %s", kindName(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := reflect.New(v.Type().Key()).Elem()
			d.decode(path, n.Content[i], key)
			val := reflect.New(v.Type().Elem()).Elem()
			d.decode(join(path, n.Content[i].Value), n.Content[i+1], val)
			m.SetMapIndex(key, val)
		}
		v.Set(m)
	default:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, n, "expected a single value, got a %s", kindName(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(path, n, "%q is not a valid %s", n.Value, scalarName(v.Kind()))
		}
	}
}

func (d *decoder) decodeStruct(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "expected a mapping, got a %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		keyNode, valNode := n.Content[i], n.Content[i+1]
		if keyNode.Tag == "!!merge" {
			d.decodeMerge(path, valNode, v, seen)
			continue
		}
		key := keyNode.Value
		keyPath := join(path, key)
		if seen[key] {
			d.fail(keyPath, keyNode, "duplicate key")
			continue
		}
		seen[key] = true
		idx, ok := fields[key]
		if !ok {
			d.fail(keyPath, keyNode, "unknown key (valid keys here: %s)", strings.Join(fieldNames(v.Type()), ", "))
			continue
		}
		d.decode(keyPath, valNode, v.FieldByIndex(idx))
	}
}

// decodeMerge applies a YAML merge key ("<<: *defaults"). Keys already set
// explicitly in the mapping win, as the YAML merge specification says, so
// callers must place the merge key first.
func (d *decoder) decodeMerge(path string, n *yaml.Node, v reflect.Value, seen map[string]bool) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	sources := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		sources = n.Content
	}
	for _, src := range sources {
		if src.Kind == yaml.AliasNode {
			src = src.Alias
		}
		if src.Kind != yaml.MappingNode {
			d.fail(join(path, "<<"), src, "merge value must be a mapping or a list of mappings")
			continue
		}
		fields := structFields(v.Type())
		for i := 0; i+1 < len(src.Content); i += 2 {
			key := src.Content[i].Value
			if seen[key] {
				continue
			}
			idx, ok := fields[key]
			if !ok {
				d.fail(join(path, key), src.Content[i], "unknown key (valid keys here: %s)", strings.Join(fieldNames(v.Type()), ", "))
				continue
			}
			d.decode(join(path, key), src.Content[i+1], v.FieldByIndex(idx))
		}
	}
}

// structFields maps YAML keys to field indexes using the `yaml` tags.
func structFields(t reflect.Type) map[string][]int {
	out := make(map[string][]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Index
	}
	return out
}

func fieldNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		names = append(names, name)
	}
	return names
}

func scalarName(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	}
	return "string"
}
