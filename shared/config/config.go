package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is one configuration file. It holds the settings both tiers share and
// the section of one tier, or of both when one file serves an L4 and an L7
// process on the same host.
type File struct {
	Log   Log   `yaml:"log"`
	Admin Admin `yaml:"admin"`

	// DrainTimeout bounds how long a process waits on SIGTERM for in-flight
	// requests and connections before it closes them.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// ShutdownDelay is how long /readyz reports 503 before listeners close
	// on SIGTERM, so health checkers in front stop sending new connections
	// first. Set it above the checker's interval times its fall count.
	ShutdownDelay Duration `yaml:"shutdown_delay"`

	L4 *L4 `yaml:"l4"`
	L7 *L7 `yaml:"l7"`
}

// Log configures the process logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // text or json
}

// Admin configures the admin HTTP listener that serves /metrics, /healthz and
// /readyz.
type Admin struct {
	Address string `yaml:"address"`
	// Token, when set, must be sent as a bearer token to admin endpoints that
	// change state and to the pprof endpoints.
	Token string `yaml:"token"`
	// Pprof serves /debug/pprof/ on the admin listener.
	Pprof bool `yaml:"pprof"`
}

// Defaults used when a key is absent.
const (
	DefaultDrainTimeout = Duration(30e9)
	MaxShutdownDelay    = Duration(300e9)
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "text"
)

// Load reads, decodes and validates the file at path. The returned error is
// an [Errors] value listing every problem when the file is invalid.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// Parse decodes and validates one configuration document. Unknown keys,
// duplicate keys and values of the wrong type are all errors.
func Parse(data []byte) (*File, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errors{{Path: "(file)", Msg: "is empty (expected an l4 or l7 section)"}}
		}
		return nil, Errors{{Path: "(file)", Msg: fmt.Sprintf("is not valid YAML: %s", err)}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{{Path: "(file)", Msg: "holds more than one YAML document"}}
	}

	f := &File{}
	d := &decoder{}
	if len(root.Content) == 1 {
		d.decode("", root.Content[0], reflect.ValueOf(f).Elem())
	}

	if d.steps >= maxSteps {
		// Decoding stopped part way, so validating the rest would report
		// every value that was never read.
		return nil, d.errs
	}
	f.setDefaults()
	errs := d.errs
	if verr, ok := f.Validate().(Errors); ok {
		// A value that failed to decode was left at its default, so a
		// validation complaint about the same key would only repeat it.
		for _, e := range verr {
			if !coveredBy(e.Path, d.errs) {
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return f, nil
}

func coveredBy(path string, errs Errors) bool {
	for _, e := range errs {
		if path == e.Path || strings.HasPrefix(path, e.Path+".") || strings.HasPrefix(path, e.Path+"[") {
			return true
		}
	}
	return false
}

func (f *File) setDefaults() {
	if f.DrainTimeout == 0 {
		f.DrainTimeout = DefaultDrainTimeout
	}
	if f.Log.Level == "" {
		f.Log.Level = DefaultLogLevel
	}
	if f.Log.Format == "" {
		f.Log.Format = DefaultLogFormat
	}
	if f.L4 != nil {
		f.L4.setDefaults()
	}
	if f.L7 != nil {
		f.L7.setDefaults()
	}
}

// Validate checks the whole file and returns every problem as [Errors].
func (f *File) Validate() error {
	var errs Errors
	switch f.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs.add("log.level", "%q is not one of debug, info, warn, error", f.Log.Level)
	}
	switch f.Log.Format {
	case "text", "json":
	default:
		errs.add("log.format", "%q is not one of text, json", f.Log.Format)
	}
	// A delay longer than this holds a node out of rotation without
	// serving anything; the health checks in front need only seconds.
	if f.ShutdownDelay > MaxShutdownDelay {
		errs.add("shutdown_delay", "%s is longer than the maximum %s", f.ShutdownDelay, MaxShutdownDelay)
	}
	if f.Admin.Address != "" {
		checkHostPort(&errs, "admin.address", f.Admin.Address)
	}
	if f.L4 == nil && f.L7 == nil {
		errs.add("(file)", "has neither an l4 nor an l7 section")
	}
	if f.L4 != nil {
		f.L4.validate("l4", &errs)
	}
	if f.L7 != nil {
		f.L7.validate("l7", &errs)
	}
	return errs.err()
}

// checkHostPort reports an address that is not "host:port" with a numeric
// port. An empty host (":8080") means every local address.
func checkHostPort(errs *Errors, path, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if _, _, err2 := net.SplitHostPort(addr + ":0"); err2 == nil {
			errs.add(path, "%q is missing a port", addr)
		} else {
			errs.add(path, "%q is not a host:port address", addr)
		}
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && port != "0") {
		errs.add(path, "%q has an invalid port %q", addr, port)
		return false
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		errs.add(path, "%q: host %q is neither an IP address nor a host name", addr, host)
		return false
	}
	return true
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, c := range h {
		ok := c == '-' || c == '.' || c == '_' || ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// checkCIDR reports a value that is neither a CIDR prefix nor a single IP.
func checkCIDR(errs *Errors, path, s string) {
	if _, _, err := net.ParseCIDR(s); err == nil {
		return
	}
	if net.ParseIP(s) != nil {
		return
	}
	errs.add(path, "%q is not a CIDR prefix such as \"10.0.0.0/8\" or an IP address", s)
}
