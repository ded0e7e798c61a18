package status

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Series is one flattened Prometheus sample. A histogram becomes its
// NAME_bucket (with an "le" label), NAME_count and NAME_sum series, as in
// the text exposition format.
type Series struct {
	Name   string
	Labels map[string]string
	Value  float64

	key string // seriesKey of Name and Labels
}

// Sample is every series of a registry at one moment.
type Sample struct {
	Time   time.Time
	byName map[string][]Series
	// byLabel indexes the series of each name by each of their label
	// pairs, so a lookup such as {vip="web", real="10.0.0.1:80"} scans
	// one real's series, not every series of the name.
	byLabel map[string][]Series
	byKey   map[string]float64
}

// NewSample flattens gathered metric families. Summaries are skipped
// because tidegate exports none.
func NewSample(families []*dto.MetricFamily, at time.Time) *Sample {
	s := &Sample{Time: at, byName: map[string][]Series{}, byLabel: map[string][]Series{}, byKey: map[string]float64{}}
	for _, mf := range families {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			labels := make(map[string]string, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s.add(name, labels, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				s.add(name, labels, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				s.add(name, labels, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					s.add(name+"_bucket", withLabel(labels, "le", formatLe(b.GetUpperBound())), float64(b.GetCumulativeCount()))
				}
				s.add(name+"_bucket", withLabel(labels, "le", "+Inf"), float64(h.GetSampleCount()))
				s.add(name+"_count", labels, float64(h.GetSampleCount()))
				s.add(name+"_sum", labels, h.GetSampleSum())
			}
		}
	}
	return s
}

func (s *Sample) add(name string, labels map[string]string, v float64) {
	key := seriesKey(name, labels)
	if _, dup := s.byKey[key]; dup {
		return // an explicit +Inf bucket repeats the one added from the count
	}
	se := Series{Name: name, Labels: labels, Value: v, key: key}
	s.byName[name] = append(s.byName[name], se)
	for k, lv := range labels {
		ik := labelIndexKey(name, k, lv)
		s.byLabel[ik] = append(s.byLabel[ik], se)
	}
	s.byKey[key] = v
}

func labelIndexKey(name, label, value string) string {
	return name + "\x00" + label + "\x00" + value
}

func withLabel(labels map[string]string, name, value string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	out[name] = value
	return out
}

func formatLe(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return fmt.Sprint(v)
}

// seriesKey identifies a series by name and sorted labels.
func seriesKey(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	for _, k := range keys {
		b.WriteString("\x00")
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(labels[k])
	}
	return b.String()
}

func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Select returns the series called name whose labels include match.
func (s *Sample) Select(name string, match map[string]string) []Series {
	// Scan the shortest list that one matcher allows; the loop below
	// checks the other matchers.
	candidates := s.byName[name]
	for k, v := range match {
		if list := s.byLabel[labelIndexKey(name, k, v)]; len(list) < len(candidates) {
			candidates = list
		}
		if len(candidates) == 0 {
			return nil
		}
	}
	var out []Series
	for _, se := range candidates {
		if matches(se.Labels, match) {
			out = append(out, se)
		}
	}
	return out
}

// WithPrefix returns every series whose name starts with prefix, sorted by
// name and labels so the output is stable.
func (s *Sample) WithPrefix(prefix string) []Series {
	var out []Series
	for name, list := range s.byName {
		if strings.HasPrefix(name, prefix) {
			out = append(out, list...)
		}
	}
	slices.SortFunc(out, func(a, b Series) int { return strings.Compare(a.key, b.key) })
	return out
}

// Sum adds the values of the series called name whose labels include match.
func (s *Sample) Sum(name string, match map[string]string) float64 {
	total := 0.0
	for _, se := range s.Select(name, match) {
		total += se.Value
	}
	return total
}

// Window is the current sample and an earlier one, for rates. Base is nil
// when there is no earlier sample.
type Window struct {
	Cur  *Sample
	Base *Sample
}

// Seconds returns the time between the samples, or 0 without a base.
func (w Window) Seconds() float64 {
	if w.Base == nil {
		return 0
	}
	return w.Cur.Time.Sub(w.Base.Time).Seconds()
}

// Increase returns how much the counters called name and matching match
// grew between the samples. A series that went down was reset, for
// example by a reload that rebuilt a pool, so its whole current value
// counts, as in Prometheus's increase(). A series absent from the base
// counts from zero.
func (w Window) Increase(name string, match map[string]string) (float64, bool) {
	if w.Base == nil {
		return 0, false
	}
	total := 0.0
	for _, se := range w.Cur.Select(name, match) {
		old := w.Base.byKey[se.key]
		if se.Value >= old {
			total += se.Value - old
		} else {
			total += se.Value
		}
	}
	return total, true
}

// Rate returns the per-second increase of name over the window, or nil
// without a base.
func (w Window) Rate(name string, match map[string]string) *float64 {
	inc, ok := w.Increase(name, match)
	secs := w.Seconds()
	if !ok || secs <= 0 {
		return nil
	}
	r := inc / secs
	return &r
}

// Quantile estimates the q-quantile (0 < q < 1) of the histogram called
// name (without the _bucket suffix) over the window, summing the buckets of
// every series matching match. Like Prometheus's histogram_quantile it
// interpolates linearly inside the bucket that holds the rank, and returns
// the highest finite bound when the rank falls in the +Inf bucket. It
// returns nil without a base or when no observation falls in the window.
func (w Window) Quantile(q float64, name string, match map[string]string) *float64 {
	if w.Base == nil {
		return nil
	}
	counts := map[float64]float64{}
	for _, se := range w.Cur.Select(name+"_bucket", match) {
		le, err := parseLe(se.Labels["le"])
		if err != nil {
			continue
		}
		old := w.Base.byKey[se.key]
		inc := se.Value - old
		if se.Value < old {
			inc = se.Value
		}
		counts[le] += inc
	}

	bounds := make([]float64, 0, len(counts))
	for le := range counts {
		bounds = append(bounds, le)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 || !math.IsInf(bounds[len(bounds)-1], 1) {
		return nil
	}
	total := counts[bounds[len(bounds)-1]]
	if total <= 0 {
		return nil
	}

	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, le := range bounds {
		c := counts[le]
		if c >= rank {
			var v float64
			switch {
			case math.IsInf(le, 1):
				v = prevBound
			case c == prevCount:
				v = le
			default:
				v = prevBound + (le-prevBound)*(rank-prevCount)/(c-prevCount)
			}
			return &v
		}
		prevBound, prevCount = le, c
	}
	return nil
}

func parseLe(s string) (float64, error) {
	if s == "+Inf" {
		return math.Inf(1), nil
	}
	var v float64
	_, err := fmt.Sscan(s, &v)
	return v, err
}

// Sampler gathers a registry on request and pairs each new sample with an
// earlier one for rates. It samples only when asked (a /status.json or
// /status request), so rates cover the time since a previous request: at
// least minWindow ago when such a sample exists, otherwise the oldest one
// kept. It is safe for concurrent use.
type Sampler struct {
	gatherer prometheus.Gatherer
	now      func() time.Time

	mu      sync.Mutex
	samples []*Sample // oldest first
}

const (
	// minWindow is the shortest window preferred for rates, so two polls
	// a few milliseconds apart do not produce noisy figures.
	minWindow = time.Second
	// maxAge drops samples older than this, so a page opened after an hour
	// of silence shows rates over the time since its first poll, not an
	// average over the hour.
	maxAge = 30 * time.Second
	// minSpacing keeps the stored samples few when many clients poll: a
	// sample newer than this is used but not stored.
	minSpacing = 250 * time.Millisecond
)

// NewSampler returns a sampler of g.
func NewSampler(g prometheus.Gatherer) *Sampler {
	return &Sampler{gatherer: g, now: time.Now}
}

// Take gathers the registry and returns the new sample with its base.
func (s *Sampler) Take() (Window, error) {
	families, err := s.gatherer.Gather()
	if err != nil {
		return Window{}, fmt.Errorf("gather metrics: %w", err)
	}
	now := s.now()
	cur := NewSample(families, now)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = slices.DeleteFunc(s.samples, func(x *Sample) bool { return now.Sub(x.Time) > maxAge })
	var base *Sample
	for _, x := range s.samples {
		if now.Sub(x.Time) >= minWindow {
			base = x // samples are oldest first, so this ends at the newest
		}
	}
	if base == nil && len(s.samples) > 0 && now.After(s.samples[0].Time) {
		base = s.samples[0]
	}
	if base != nil {
		// Samples older than the base will never be chosen again.
		i := slices.Index(s.samples, base)
		s.samples = s.samples[i:]
	}
	if n := len(s.samples); n == 0 || now.Sub(s.samples[n-1].Time) >= minSpacing {
		s.samples = append(s.samples, cur)
	}
	return Window{Cur: cur, Base: base}, nil
}

// Counters returns every series whose name starts with prefix, each with
// its rate over w when it is a counter (name ending in _total).
func Counters(w Window, prefix string) []Counter {
	out := []Counter{}
	for _, se := range w.Cur.WithPrefix(prefix) {
		c := Counter{Name: se.Name, Labels: se.Labels, Value: se.Value}
		if strings.HasSuffix(se.Name, "_total") {
			c.Rate = w.Rate(se.Name, se.Labels)
		}
		out = append(out, c)
	}
	return out
}
