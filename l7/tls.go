package l7

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/tidegate/tidegate/l7/route"
	"github.com/tidegate/tidegate/shared/config"
)

// certSet is one loaded generation of a listener's certificates, indexed by
// the DNS names they cover. It is immutable.
type certSet struct {
	def      *tls.Certificate
	exact    map[string]*tls.Certificate // "www.example.com"
	wildcard map[string]*tls.Certificate // "example.com" for "*.example.com"
}

func loadCertSet(files []config.Certificate) (*certSet, error) {
	set := &certSet{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for i, f := range files {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load certificate %s: %w", f.CertFile, err)
		}
		if i == 0 {
			set.def = &cert
		}
		// Go 1.23 and later fill Leaf in LoadX509KeyPair.
		if cert.Leaf == nil {
			continue
		}
		names := cert.Leaf.DNSNames
		if len(names) == 0 && cert.Leaf.Subject.CommonName != "" {
			names = []string{cert.Leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = route.NormalizeHost(n)
			m, key := set.exact, n
			if suffix, ok := strings.CutPrefix(n, "*."); ok {
				m, key = set.wildcard, suffix
			}
			// The first certificate that names a host wins, as in
			// configuration order.
			if _, dup := m[key]; !dup {
				m[key] = &cert
			}
		}
	}
	if set.def == nil {
		return nil, errors.New("load certificates: none configured")
	}
	return set, nil
}

// lookup returns the certificate that covers name, or nil. A wildcard covers
// exactly one label, as RFC 6125 section 6.4.3 specifies for certificate
// names.
func (s *certSet) lookup(name string) *tls.Certificate {
	if c := s.exact[name]; c != nil {
		return c
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		return s.wildcard[parent]
	}
	return nil
}

// certStore serves the current certSet of one listener and reloads it.
type certStore struct {
	files      []config.Certificate
	ticketFile string
	current    atomic.Pointer[certSet]
	config     *tls.Config
}

func newCertStore(c *config.TLS) (*certStore, error) {
	st := &certStore{files: c.Certificates, ticketFile: c.SessionTicketKeyFile}
	set, err := loadCertSet(c.Certificates)
	if err != nil {
		return nil, err
	}
	st.current.Store(set)

	minVersion := uint16(tls.VersionTLS12)
	if c.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	st.config = &tls.Config{
		MinVersion: minVersion,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			set := st.current.Load()
			if c := set.lookup(route.NormalizeHost(hello.ServerName)); c != nil {
				return c, nil
			}
			return set.def, nil
		},
	}
	if st.ticketFile != "" {
		if err := st.loadTicketKeys(); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// reload loads the certificate and ticket-key files again. On error the
// previous generation keeps serving.
func (st *certStore) reload() error {
	set, err := loadCertSet(st.files)
	if err != nil {
		return err
	}
	if st.ticketFile != "" {
		if err := st.loadTicketKeys(); err != nil {
			return err
		}
	}
	st.current.Store(set)
	return nil
}

func (st *certStore) loadTicketKeys() error {
	data, err := os.ReadFile(st.ticketFile)
	if err != nil {
		return fmt.Errorf("read session ticket keys: %w", err)
	}
	keys, err := ParseTicketKeys(data)
	if err != nil {
		return fmt.Errorf("session ticket keys %s: %w", st.ticketFile, err)
	}
	st.config.SetSessionTicketKeys(keys)
	return nil
}

// misdirected reports whether a request for host must get 421 on a
// connection whose TLS server name is sni. That is the case when this
// listener serves host under a different certificate than the one the
// connection negotiated. The client then reused a connection it should not
// have, for example through HTTP/2 connection coalescing.
func (st *certStore) misdirected(sni, host string) bool {
	if sni == "" || sni == host {
		return false
	}
	set := st.current.Load()
	hostCert := set.lookup(host)
	if hostCert == nil {
		return false
	}
	sniCert := set.lookup(sni)
	if sniCert == nil {
		sniCert = set.def
	}
	return hostCert != sniCert
}

// maxTicketKeys bounds the key file. crypto/tls tries every key on each
// resumption, so a long list costs CPU on every handshake.
const maxTicketKeys = 16

// ParseTicketKeys parses a session ticket key file with one key per line,
// each the standard base64 encoding of 32 bytes. The first key encrypts new
// tickets and the others only decrypt, so keys can rotate across a fleet
// without breaking resumption. Blank lines and lines starting with '#' are
// skipped. A file of exactly 32*n bytes that is not such text is read as n
// raw keys.
func ParseTicketKeys(data []byte) ([][32]byte, error) {
	keys, textErr := parseTicketKeyText(data)
	if textErr == nil {
		return keys, nil
	}
	if len(data) > 0 && len(data)%32 == 0 && !isText(data) {
		if len(data)/32 > maxTicketKeys {
			return nil, fmt.Errorf("%d keys exceed the maximum of %d", len(data)/32, maxTicketKeys)
		}
		keys = make([][32]byte, len(data)/32)
		for i := range keys {
			copy(keys[i][:], data[i*32:])
		}
		return keys, nil
	}
	return nil, textErr
}

func parseTicketKeyText(data []byte) ([][32]byte, error) {
	var keys [][32]byte
	for n, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var key [32]byte
		// A 32-byte key encodes to 44 base64 characters.
		if base64.StdEncoding.DecodedLen(len(line)) > 33 {
			return nil, fmt.Errorf("line %d: key is longer than 32 bytes", n+1)
		}
		k, err := base64.StdEncoding.AppendDecode(nil, line)
		if err != nil {
			return nil, fmt.Errorf("line %d: invalid base64: %w", n+1, err)
		}
		if len(k) != 32 {
			return nil, fmt.Errorf("line %d: key is %d bytes, want 32", n+1, len(k))
		}
		copy(key[:], k)
		keys = append(keys, key)
		if len(keys) > maxTicketKeys {
			return nil, fmt.Errorf("more than %d keys", maxTicketKeys)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys found (expected base64 lines of 32 bytes each)")
	}
	return keys, nil
}

func isText(data []byte) bool {
	for _, c := range data {
		if c != '\n' && c != '\r' && c != '\t' && (c < 0x20 || c > 0x7e) {
			return false
		}
	}
	return true
}

// tlsVersionName returns "1.2" for tls.VersionTLS12 and so on.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "1.0"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}
