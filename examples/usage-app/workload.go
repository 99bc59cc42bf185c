package main

import (
	"fmt"
	"math"
	"math/rand/v2"
)

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

// NewWorkload returns the workload for n customers and a seed.
func NewWorkload(n int, seed uint64) *Workload {
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

func newSummary(seed uint64, customers int) *Summary {
	return &Summary{
		Seed:            seed,
		Customers:       customers,
		Requests:        map[string]map[string]int64{},
		RequestDuration: map[string]map[string]*Observations{},
		ActiveSessions:  map[string]int64{},
	}
}

// add records one tick into the summary.
func (s *Summary) add(w *Workload, t Tick) {
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
