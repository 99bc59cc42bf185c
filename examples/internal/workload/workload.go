// Package workload is the example apps' deterministic per-customer workload:
// what they record, and the summary of exactly what was recorded, to compare
// with what CloudZero received.
package workload

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// TickEvery is how often the apps play a tick of the workload.
const TickEvery = 100 * time.Millisecond

// Features a request can use, with how often they are used and how long they
// take (a request of feature f takes between 0.5 and 1.5 times its base).
var features = []struct {
	name   string
	weight float64
	base   float64 // seconds
}{
	{"search", 0.6, 0.050},
	{"checkout", 0.3, 0.200},
	{"export", 0.1, 1.500},
}

// Request is one request the app served.
type Request struct {
	Customer string
	Feature  string
	Millis   int64 // how long it took, in whole milliseconds
}

// Seconds is how long the request took.
func (r Request) Seconds() float64 { return float64(r.Millis) / 1000 }

// Tick is what happened during one tick of the workload.
type Tick struct {
	Requests []Request
	// SessionDeltas are the changes of each customer's active sessions (index =
	// customer); most are 0.
	SessionDeltas []int64
}

// Workload generates a deterministic, skewed per-customer workload from a seed:
// customer i (from 0) gets a share of the requests proportional to 1/(i+1)^1.3,
// so with 5 customers the first gets about half and the last about 6%.
type Workload struct {
	Customers []string
	seed      uint64
	rng       *rand.Rand
	weights   []float64 // cumulative, normalised to end at 1
	sessions  []int64   // current active sessions per customer
	targets   []int64   // sessions each customer drifts around
}

// New returns the workload for n customers and a seed.
func New(n int, seed uint64) *Workload {
	w := &Workload{
		seed:     seed,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		sessions: make([]int64, n),
		targets:  make([]int64, n),
	}
	total := 0.0
	raw := make([]float64, n)
	for i := range n {
		w.Customers = append(w.Customers, fmt.Sprintf("customer-%02d", i+1))
		raw[i] = 1 / math.Pow(float64(i+1), 1.3)
		total += raw[i]
	}
	acc := 0.0
	for i := range n {
		acc += raw[i] / total
		w.weights = append(w.weights, acc)
		w.targets[i] = max(1, int64(math.Round(30*raw[i]/total)))
	}
	if n > 0 {
		w.weights[n-1] = 1
	}
	return w
}

// Next returns the next tick: 5 to 15 requests, and session changes.
func (w *Workload) Next() Tick {
	var t Tick
	for range 5 + w.rng.IntN(11) {
		c := w.pickCustomer()
		f := w.pickFeature()
		secs := features[f].base * (0.5 + w.rng.Float64())
		t.Requests = append(t.Requests, Request{
			Customer: w.Customers[c],
			Feature:  features[f].name,
			Millis:   max(1, int64(math.Round(secs*1000))),
		})
	}
	t.SessionDeltas = make([]int64, len(w.Customers))
	for i := range w.Customers {
		if w.rng.IntN(4) != 0 { // sessions change on about one tick in four
			continue
		}
		d := int64(1)
		if w.sessions[i] > w.targets[i] || (w.sessions[i] > 0 && w.rng.IntN(3) == 0) {
			d = -1
		}
		w.sessions[i] += d
		t.SessionDeltas[i] = d
	}
	return t
}

func (w *Workload) pickCustomer() int {
	x := w.rng.Float64()
	for i, c := range w.weights {
		if x < c {
			return i
		}
	}
	return len(w.weights) - 1
}

func (w *Workload) pickFeature() int {
	x := w.rng.Float64()
	for i, f := range features {
		if x < f.weight {
			return i
		}
		x -= f.weight
	}
	return len(features) - 1
}

// Summary is exactly what the app recorded, printed as JSON on exit.
type Summary struct {
	Seed      uint64 `json:"seed"`
	Customers int    `json:"customers"`
	Ticks     int    `json:"ticks"`
	Started   string `json:"started,omitempty"` // RFC 3339, UTC
	Finished  string `json:"finished,omitempty"`
	// TotalRequests is the sum of Requests.
	TotalRequests int64 `json:"total_requests"`
	// Requests: customer -> feature -> what app.requests counted.
	Requests map[string]map[string]int64 `json:"requests"`
	// RequestDuration: customer -> feature -> observations of app.request.duration.
	RequestDuration map[string]map[string]*Observations `json:"request_duration"`
	// ActiveSessions: customer -> final value of app.active_sessions.
	ActiveSessions map[string]int64 `json:"active_sessions"`
}

// Observations are the number and the sum of a histogram's observations.
type Observations struct {
	Count  int64   `json:"count"`
	Sum    float64 `json:"sum"` // seconds
	millis int64
}

// NewSummary returns an empty summary.
func NewSummary(seed uint64, customers int) *Summary {
	return &Summary{
		Seed:            seed,
		Customers:       customers,
		Requests:        map[string]map[string]int64{},
		RequestDuration: map[string]map[string]*Observations{},
		ActiveSessions:  map[string]int64{},
	}
}

// Add records one tick into the summary.
func (s *Summary) Add(w *Workload, t Tick) {
	s.Ticks++
	for _, r := range t.Requests {
		if s.Requests[r.Customer] == nil {
			s.Requests[r.Customer] = map[string]int64{}
			s.RequestDuration[r.Customer] = map[string]*Observations{}
		}
		s.Requests[r.Customer][r.Feature]++
		s.TotalRequests++
		o := s.RequestDuration[r.Customer][r.Feature]
		if o == nil {
			o = &Observations{}
			s.RequestDuration[r.Customer][r.Feature] = o
		}
		o.Count++
		o.millis += r.Millis
		o.Sum = float64(o.millis) / 1000 // exact to the millisecond, unlike a running float sum
	}
	for i, d := range t.SessionDeltas {
		s.ActiveSessions[w.Customers[i]] += d
	}
}

// Run plays ticks of the workload, one every `every` (0: as fast as possible),
// records them with meter and returns the summary of what it recorded. It stops
// early, without error, when ctx ends. Progress goes to logw every 10 seconds.
func Run(ctx context.Context, meter metric.Meter, w *Workload, ticks int, every time.Duration, logw io.Writer) (*Summary, error) {
	requests, err := meter.Int64Counter("app.requests",
		metric.WithUnit("{request}"), metric.WithDescription("Requests served"))
	if err != nil {
		return nil, err
	}
	sessions, err := meter.Int64UpDownCounter("app.active_sessions",
		metric.WithUnit("{session}"), metric.WithDescription("Sessions open now"))
	if err != nil {
		return nil, err
	}
	latency, err := meter.Float64Histogram("app.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Request duration"),
		metric.WithExplicitBucketBoundaries(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	if err != nil {
		return nil, err
	}

	sum := NewSummary(w.seed, len(w.Customers))
	start := time.Now()
	sum.Started = start.UTC().Format(time.RFC3339Nano)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	wait := func() bool { // false when ctx ended
		if tick == nil {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			return true
		}
	}
	lastLog := start
	for i := 0; i < ticks && wait(); i++ {
		t := w.Next()
		for _, r := range t.Requests {
			attrs := metric.WithAttributes(attribute.String("customer.id", r.Customer), attribute.String("feature", r.Feature))
			requests.Add(ctx, 1, attrs)
			latency.Record(ctx, r.Seconds(), attrs)
		}
		for c, d := range t.SessionDeltas {
			if d != 0 {
				sessions.Add(ctx, d, metric.WithAttributes(attribute.String("customer.id", w.Customers[c])))
			}
		}
		sum.Add(w, t)
		if now := time.Now(); logw != nil && now.Sub(lastLog) >= 10*time.Second {
			lastLog = now
			fmt.Fprintf(logw, "usage-app: %s: %d requests recorded\n", now.Sub(start).Round(time.Second), sum.TotalRequests)
		}
	}
	sum.Finished = time.Now().UTC().Format(time.RFC3339Nano)
	return sum, nil
}
