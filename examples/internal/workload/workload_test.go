package workload

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func play(n int, seed uint64, ticks int) []Tick {
	w := New(n, seed)
	out := make([]Tick, ticks)
	for i := range out {
		out[i] = w.Next()
	}
	return out
}

func TestWorkloadIsDeterministic(t *testing.T) {
	a, b := play(5, 42, 200), play(5, 42, 200)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different workloads")
	}
	if reflect.DeepEqual(a, play(5, 43, 200)) {
		t.Fatal("different seeds, same workload")
	}
}

func TestWorkloadIsSkewed(t *testing.T) {
	w := New(5, 1)
	sum := NewSummary(1, 5)
	for range 600 { // one minute
		sum.Add(w, w.Next())
	}
	if sum.Ticks != 600 || sum.TotalRequests < 600*5 || sum.TotalRequests > 600*15 {
		t.Fatalf("ticks %d, requests %d", sum.Ticks, sum.TotalRequests)
	}
	perCustomer := func(c string) (n int64) {
		for _, v := range sum.Requests[c] {
			n += v
		}
		return n
	}
	var prev int64 = 1 << 62
	for _, c := range w.Customers {
		n := perCustomer(c)
		if n >= prev {
			t.Errorf("%s has %d requests, not fewer than the customer before it (%d)", c, n, prev)
		}
		prev = n
		if s := sum.ActiveSessions[c]; s < 0 {
			t.Errorf("%s: %d active sessions", c, s)
		}
	}
	if first := float64(perCustomer("customer-01")) / float64(sum.TotalRequests); first < 0.4 || first > 0.6 {
		t.Errorf("customer-01 has %.0f%% of the requests, want about half", first*100)
	}
}

func TestSummaryCountsEveryRequest(t *testing.T) {
	w := New(3, 7)
	sum := NewSummary(7, 3)
	want := map[[2]string]int64{}
	wantMillis := map[[2]string]int64{}
	for range 100 {
		tk := w.Next()
		for _, r := range tk.Requests {
			want[[2]string{r.Customer, r.Feature}]++
			wantMillis[[2]string{r.Customer, r.Feature}] += r.Millis
		}
		sum.Add(w, tk)
	}
	var total int64
	for k, n := range want {
		total += n
		if got := sum.Requests[k[0]][k[1]]; got != n {
			t.Errorf("requests %v = %d, want %d", k, got, n)
		}
		o := sum.RequestDuration[k[0]][k[1]]
		if o.Count != n || o.Sum != float64(wantMillis[k])/1000 {
			t.Errorf("duration %v = %+v, want count %d sum %v", k, o, n, float64(wantMillis[k])/1000)
		}
	}
	if total != sum.TotalRequests {
		t.Errorf("total %d, want %d", sum.TotalRequests, total)
	}
	// The JSON form is stable: map keys sorted.
	a, _ := json.Marshal(sum)
	b, _ := json.Marshal(sum)
	if string(a) != string(b) {
		t.Error("summary JSON not stable")
	}
}

// TestRunRecordsWhatTheSummarySays runs the app's recording loop with a manual
// reader (no network, no waiting) and checks the SDK's cumulative data against
// the summary.
func TestRunRecordsWhatTheSummarySays(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	sum, err := Run(context.Background(), mp.Meter("test"), New(4, 9), 50, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	str := func(s attribute.Set, k attribute.Key) string { v, _ := s.Value(k); return v.AsString() }
	seen := map[string]bool{}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		seen[m.Name] = true
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			if d.Temporality != metricdata.CumulativeTemporality {
				t.Errorf("%s: temporality %v", m.Name, d.Temporality)
			}
			for _, p := range d.DataPoints {
				c := str(p.Attributes, "customer.id")
				switch m.Name {
				case "app.requests":
					if want := sum.Requests[c][str(p.Attributes, "feature")]; p.Value != want {
						t.Errorf("app.requests %s: %d, summary %d", p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value, want)
					}
				case "app.active_sessions":
					if want := sum.ActiveSessions[c]; p.Value != want {
						t.Errorf("app.active_sessions %s: %d, summary %d", c, p.Value, want)
					}
				}
			}
		case metricdata.Histogram[float64]:
			var n int64
			for _, p := range d.DataPoints {
				o := sum.RequestDuration[str(p.Attributes, "customer.id")][str(p.Attributes, "feature")]
				if o == nil || int64(p.Count) != o.Count || abs(p.Sum-o.Sum) > 1e-6 {
					t.Errorf("app.request.duration %s: count %d sum %v, summary %+v",
						p.Attributes.Encoded(attribute.DefaultEncoder()), p.Count, p.Sum, o)
				}
				n += int64(p.Count)
			}
			if n != sum.TotalRequests {
				t.Errorf("histogram count %d, summary %d requests", n, sum.TotalRequests)
			}
		default:
			t.Errorf("%s: unexpected data %T", m.Name, m.Data)
		}
	}
	for _, name := range []string{"app.requests", "app.active_sessions", "app.request.duration"} {
		if !seen[name] {
			t.Errorf("%s not recorded", name)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
