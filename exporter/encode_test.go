package exporter

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

func TestEncodeExact(t *testing.T) {
	set := record.NewSet()
	for _, e := range []string{"b", "a", "c"} {
		k, _ := record.NewKey(record.Record{Timestamp: mustTime("2025-01-25T00:00:00Z"), Granularity: record.Daily, ElementName: e})
		set.Add("s", k, 1.5)
	}
	bodies, skipped := Chunker{MaxRecords: 2}.Bodies("s", set.Records("s"))
	if skipped != 0 || len(bodies) != 2 {
		t.Fatalf("%d bodies, %d skipped", len(bodies), skipped)
	}
	const rec = `{"timestamp":"2025-01-25T00:00:00Z","granularity":"DAILY","element_name":%q,"value":"1.5"}`
	want := []string{
		`{"records":[` + strings.ReplaceAll(rec, "%q", `"a"`) + `,` + strings.ReplaceAll(rec, "%q", `"b"`) + `]}`,
		`{"records":[` + strings.ReplaceAll(rec, "%q", `"c"`) + `]}`,
	}
	for i, b := range bodies {
		if string(b.Bytes) != want[i] || b.Stream != "s" || b.Records != len(b.Entries) {
			t.Fatalf("body %d:\n got %s\nwant %s", i, b.Bytes, want[i])
		}
	}
}

func TestChunkerLimits(t *testing.T) {
	set := makeSet(t, 3000, "s")
	// Values CloudZero rejects are skipped and counted.
	for i, v := range []float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1)} {
		k, _ := record.NewKey(record.Record{Timestamp: mustTime("2025-01-25T00:00:00Z"), Granularity: record.Daily, ElementName: "bad" + string(rune('a'+i))})
		set.Add("s", k, v)
	}
	recs := set.Records("s")
	for _, tc := range []struct{ maxBytes, maxRecords int }{
		{0, 0}, {0, 1}, {0, 7}, {0, 1000}, {MinMaxBytes, 0}, {20000, 0}, {100000, 333}, {1, 0},
	} {
		c := Chunker{MaxBytes: tc.maxBytes, MaxRecords: tc.maxRecords}
		maxBytes, maxRecords := c.limits()
		bodies, skipped := c.Bodies("s", recs)
		if skipped != 5 {
			t.Fatalf("%+v: skipped %d", tc, skipped)
		}
		var all []string
		for _, b := range bodies {
			if len(b.Bytes) > maxBytes || b.Records > maxRecords || b.Records == 0 {
				t.Fatalf("%+v: body of %d bytes, %d records", tc, len(b.Bytes), b.Records)
			}
			var parsed struct{ Records []json.RawMessage }
			if err := json.Unmarshal(b.Bytes, &parsed); err != nil || len(parsed.Records) != b.Records {
				t.Fatalf("%+v: %v, %d records", tc, err, len(parsed.Records))
			}
			for i, e := range b.Entries {
				if string(parsed.Records[i]) != string(record.AppendRecord(nil, e.Key, e.Value)) {
					t.Fatalf("record %d differs", i)
				}
				all = append(all, string(e.Key))
			}
		}
		if len(all) != 3000 || !slices.IsSorted(all) || len(slices.Compact(all)) != 3000 {
			t.Fatalf("%+v: %d records, sorted %v", tc, len(all), slices.IsSorted(all))
		}
		// Bodies are as full as the limits allow.
		if tc.maxRecords == 0 && tc.maxBytes > 0 && len(bodies) > 1 && len(bodies[0].Bytes)+400 < maxBytes {
			t.Fatalf("%+v: first body only %d bytes", tc, len(bodies[0].Bytes))
		}
	}
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}
