package config

import (
	"net/netip"
	"path/filepath"
)

// XDP engine defaults.
const (
	DefaultSNATPortMin    = 20000
	DefaultSNATPortMax    = 29999
	DefaultFlowTableSize  = 65536
	DefaultMaxVIPs        = 16
	DefaultPinPath        = "/sys/fs/bpf/tidegate"
	DefaultXDPIdleTimeout = Duration(300e9)
	DefaultClosingTimeout = Duration(10e9)
)

func (d *Dataplane) setDefaults() {
	if d.SNATPortMin == 0 && d.SNATPortMax == 0 {
		d.SNATPortMin, d.SNATPortMax = DefaultSNATPortMin, DefaultSNATPortMax
	}
	if d.FlowTableSize == 0 {
		d.FlowTableSize = DefaultFlowTableSize
	}
	if d.MaxVIPs == 0 {
		d.MaxVIPs = DefaultMaxVIPs
	}
	if d.PinPath == "" && d.Mode != "userspace" {
		d.PinPath = DefaultPinPath
	}
	if d.IdleTimeout == 0 {
		d.IdleTimeout = DefaultXDPIdleTimeout
	}
	if d.ClosingTimeout == 0 {
		d.ClosingTimeout = DefaultClosingTimeout
	}
}

// validate checks the XDP keys. Mode xdp needs interfaces and a SNAT
// address; auto accepts their absence and stays with the userspace engine.
func (d *Dataplane) validate(path string, errs *Errors) {
	if d.Mode == "xdp" && len(d.Interfaces) == 0 {
		errs.add(join(path, "interfaces"), "is empty (mode xdp needs the links to attach to)")
	}
	seen := map[string]int{}
	for i, name := range d.Interfaces {
		p := index(join(path, "interfaces"), i)
		if name == "" || len(name) > 15 {
			errs.add(p, "%q is not a Linux interface name (1 to 15 bytes)", name)
			continue
		}
		if j, dup := seen[name]; dup {
			errs.add(p, "%q is already listed as interfaces[%d]", name, j)
		}
		seen[name] = i
	}

	if d.SNATAddress == "" {
		if d.Mode == "xdp" {
			errs.add(join(path, "snat_address"), "is missing (mode xdp needs the IPv4 address the L4 uses towards the reals)")
		}
	} else if a, err := netip.ParseAddr(d.SNATAddress); err != nil || !a.Is4() {
		errs.add(join(path, "snat_address"), "%q is not an IPv4 address", d.SNATAddress)
	}

	if d.SNATPortMin < 1 || d.SNATPortMin > 65535 {
		errs.add(join(path, "snat_port_min"), "%d is outside 1..65535", d.SNATPortMin)
	}
	if d.SNATPortMax < 1 || d.SNATPortMax > 65535 {
		errs.add(join(path, "snat_port_max"), "%d is outside 1..65535", d.SNATPortMax)
	} else if d.SNATPortMax < d.SNATPortMin {
		errs.add(join(path, "snat_port_max"), "%d is below snat_port_min %d", d.SNATPortMax, d.SNATPortMin)
	}
	if d.FlowTableSize < 1 || d.FlowTableSize > 1<<24 {
		errs.add(join(path, "flow_table_size"), "%d is outside 1..16777216", d.FlowTableSize)
	}
	if d.MaxVIPs < 1 || d.MaxVIPs > 1024 {
		errs.add(join(path, "max_vips"), "%d is outside 1..1024", d.MaxVIPs)
	}
	if d.PinPath != "" && !filepath.IsAbs(d.PinPath) {
		errs.add(join(path, "pin_path"), "%q is not an absolute path", d.PinPath)
	}
	if d.ClosingTimeout > d.IdleTimeout {
		errs.add(join(path, "closing_timeout"), "%s is longer than idle_timeout %s", d.ClosingTimeout, d.IdleTimeout)
	}
}
