package main

import (
	"bytes"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

func entry(ts, el, feature, value string) emulator.EntryLedger {
	e := emulator.EntryLedger{Timestamp: ts, Granularity: "HOURLY", ElementName: el, Value: value, Filter: map[string][]string{}}
	if feature != "" {
		e.Filter["custom:feature"] = []string{feature}
	}
	return e
}

const (
	h1 = "2026-05-01T10:00:00Z"
	h2 = "2026-05-01T11:00:00Z"
)

var shareRE = regexp.MustCompile(`^    (\S+)\s+(\S+)\s+([0-9.]+)%\s*(#*)$`)

func TestRender(t *testing.T) {
	tests := []struct {
		name    string
		entries []emulator.EntryLedger
		// want: bucket timestamp -> element -> "value share%"
		want map[string]map[string]string
	}{
		{
			name:    "one element has everything",
			entries: []emulator.EntryLedger{entry(h1, "a", "", "42")},
			want:    map[string]map[string]string{h1: {"a": "42 100.0"}},
		},
		{
			name:    "thirds round to 100.0 in total",
			entries: []emulator.EntryLedger{entry(h1, "a", "", "1"), entry(h1, "b", "", "1"), entry(h1, "c", "", "1")},
			want:    map[string]map[string]string{h1: {"a": "1 33.4", "b": "1 33.3", "c": "1 33.3"}},
		},
		{
			name: "filters of one element add up; buckets are separate",
			entries: []emulator.EntryLedger{
				entry(h1, "a", "search", "30"), entry(h1, "a", "export", "10.5"),
				entry(h1, "b", "search", "9.5"),
				entry(h2, "b", "search", "7"), entry(h2, "c", "export", "1"),
			},
			want: map[string]map[string]string{
				h1: {"a": "40.5 81.0", "b": "9.5 19.0"},
				h2: {"b": "7 87.5", "c": "1 12.5"},
			},
		},
		{
			name: "skewed, with awkward shares",
			entries: []emulator.EntryLedger{
				entry(h1, "a", "", "2671"), entry(h1, "b", "", "1089"), entry(h1, "c", "", "641"),
				entry(h1, "d", "", "449"), entry(h1, "e", "", "331"), entry(h1, "f", "", "0.001"),
			},
			want: map[string]map[string]string{h1: {
				"a": "2671 51.5", "b": "1089 21.0", "c": "641 12.4", "d": "449 8.7", "e": "331 6.4", "f": "0.001 0.0",
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &emulator.Ledger{Streams: []emulator.StreamLedger{{
				Name: "s", Granularity: "HOURLY", FilterKeys: []string{"custom:feature"}, Entries: tt.entries,
			}}}
			var out bytes.Buffer
			if err := render(&out, l, options{width: 20}); err != nil {
				t.Fatal(err)
			}
			got := map[string]map[string]string{}
			tenths := map[string]int{}
			bucket := ""
			for _, line := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(line, "  20") {
					bucket = strings.Fields(line)[0]
					got[bucket] = map[string]string{}
					continue
				}
				m := shareRE.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				got[bucket][m[1]] = m[2] + " " + m[3]
				pct, _ := strconv.ParseFloat(m[3], 64)
				tenths[bucket] += int(pct*10 + 0.5)
				if want := int(pct*20/100 + 0.5); len(m[4]) != want {
					t.Errorf("%s: bar of %d for %s%%, want %d", m[1], len(m[4]), m[3], want)
				}
			}
			for b, n := range tenths {
				if n != 1000 {
					t.Errorf("bucket %s: shares add up to %.1f%%, want 100.0%%\n%s", b, float64(n)/10, out.String())
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("buckets %v, want %v\n%s", got, tt.want, out.String())
			}
			for b, els := range tt.want {
				for el, v := range els {
					if got[b][el] != v {
						t.Errorf("bucket %s element %s: %q, want %q\n%s", b, el, got[b][el], v, out.String())
					}
				}
				if len(got[b]) != len(els) {
					t.Errorf("bucket %s: %v, want %v", b, got[b], els)
				}
			}
		})
	}
}

func TestRenderFiltersAndSummary(t *testing.T) {
	l := &emulator.Ledger{
		Streams: []emulator.StreamLedger{{Name: "demo-requests", Granularity: "HOURLY", FilterKeys: []string{"custom:feature"},
			Total: "4", RecordsApplied: 3, Entries: []emulator.EntryLedger{
				entry(h1, "a", "search", "3"), entry(h1, "b", "export", "1"),
			}}},
		RecordsAccepted:    3,
		RequestsByStatus:   map[string]int64{"200": 2, "429": 1},
		RejectionsByReason: map[string]int64{"rate_limited": 1},
	}
	var out bytes.Buffer
	if err := render(&out, l, options{filters: true, width: 10}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"demo-requests  (HOURLY, filter custom:feature)  total 4, 3 records applied",
		"custom:feature=search  3   75.0%",
		"custom:feature=export  1   25.0%",
		"Records accepted: 3.  Requests by status: 200: 2, 429: 1.  Rejections: rate_limited: 1.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRenderRejectsBadValue(t *testing.T) {
	l := &emulator.Ledger{Streams: []emulator.StreamLedger{{Name: "s", Entries: []emulator.EntryLedger{entry(h1, "a", "", "x")}}}}
	if err := render(&bytes.Buffer{}, l, options{}); err == nil {
		t.Fatal("no error for a bad value")
	}
}

func TestSharesAlwaysAddUp(t *testing.T) {
	for n := 1; n <= 12; n++ {
		rows := make([]row, n)
		total := new(big.Rat)
		for i := range rows {
			rows[i] = row{label: strconv.Itoa(i), value: big.NewRat(int64(i*i*7+3), int64(i+1))}
			total.Add(total, rows[i].value)
		}
		var sum int64
		for _, s := range shares(rows, total) {
			sum += s
		}
		if sum != 1000 {
			t.Errorf("%d rows: shares add up to %d tenths", n, sum)
		}
	}
}

func TestCheck(t *testing.T) {
	l := &emulator.Ledger{Streams: []emulator.StreamLedger{{Name: "s", Entries: []emulator.EntryLedger{
		entry(h1, "a", "", "2.5"), entry(h2, "b", "", "4"),
	}}}}
	tests := []struct {
		expects []string
		ok      bool
		want    string
	}{
		{[]string{"s=6.5"}, true, "check s: received 6.5, expected 6.5: OK"},
		{[]string{"s=6.5", "s=7"}, false, "check s: received 6.5, expected 7: MISMATCH, difference -0.5"},
		{[]string{"missing=1"}, false, "check missing: received 0, expected 1: MISMATCH, difference -1"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if ok := check(&out, l, tt.expects); ok != tt.ok || !strings.Contains(out.String(), tt.want) {
			t.Errorf("check(%v) = %v\n%s\nwant %v and %q", tt.expects, ok, out.String(), tt.ok, tt.want)
		}
	}
}

func TestSharesOfAPartRoundToNearest(t *testing.T) {
	rows := []row{{"a", big.NewRat(434, 1)}, {"b", big.NewRat(227, 1)}}
	got := shares(rows, big.NewRat(1473, 1))
	if got[0] != 295 || got[1] != 154 { // 29.46%, 15.41%
		t.Errorf("shares = %v, want [295 154]", got)
	}
}
