package l7

import (
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// certReloadDelay groups the events of one certificate rotation (a tool
// writes the key, then the certificate, or swaps a symlinked directory)
// into a single reload.
const certReloadDelay = 200 * time.Millisecond

// certWatcher reloads listener certificates and ticket keys when files in
// their directories change. It watches directories, not files, because
// rotation tools replace files by rename, which ends a watch on the old
// inode.
type certWatcher struct {
	w    *fsnotify.Watcher
	done chan struct{}
	once sync.Once
}

func (s *Server) startCertWatcher() *certWatcher {
	var stores []*certStore
	dirs := map[string]bool{}
	for _, l := range s.listeners {
		st := l.settings.Load().certs
		if st == nil {
			continue
		}
		stores = append(stores, st)
		for _, c := range st.files {
			dirs[filepath.Dir(c.CertFile)] = true
			dirs[filepath.Dir(c.KeyFile)] = true
		}
		if st.ticketFile != "" {
			dirs[filepath.Dir(st.ticketFile)] = true
		}
	}
	if len(stores) == 0 {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.logger.Error("certificate watcher not started, certificates reload only on SIGHUP", "err", err)
		return nil
	}
	for dir := range dirs {
		if err := w.Add(dir); err != nil {
			s.logger.Error("watch certificate directory failed", "dir", dir, "err", err)
		}
	}
	cw := &certWatcher{w: w, done: make(chan struct{})}
	go cw.run(s, stores)
	return cw
}

func (cw *certWatcher) run(s *Server, stores []*certStore) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-cw.done:
			timer.Stop()
			return
		case ev, ok := <-cw.w.Events:
			if !ok {
				return
			}
			if ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename|fsnotify.Remove) != 0 {
				timer.Reset(certReloadDelay)
			}
		case err, ok := <-cw.w.Errors:
			if !ok {
				return
			}
			s.logger.Warn("certificate watcher error", "err", err)
		case <-timer.C:
			for _, st := range stores {
				if err := st.reload(); err != nil {
					// A half-written rotation fails here and succeeds on
					// the event of its last write.
					s.metrics.certReloads.WithLabelValues("error").Inc()
					s.logger.Warn("certificate reload failed, keeping the loaded certificates", "err", err)
					continue
				}
				s.metrics.certReloads.WithLabelValues("ok").Inc()
				s.logger.Info("certificates reloaded", "files", len(st.files))
			}
		}
	}
}

func (cw *certWatcher) close() {
	cw.once.Do(func() {
		close(cw.done)
		_ = cw.w.Close()
	})
}
