package translator

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

func TestScalar(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
		st   valStatus
	}{
		{"acme", "acme", valOK},
		{"", "", valMissing},
		{int64(-42), "-42", valOK},
		{0.1, "0.1", valOK},
		{100.0, "100", valOK},
		{-2.5, "-2.5", valOK},
		{123456789012.5, "123456789012.5", valOK},
		{1e20, "100000000000000000000", valOK},
		{1e21, "1e+21", valOK}, // as JavaScript prints numbers: plain from 1e-6 to 1e21
		{1e-7, "1e-07", valOK},
		{math.Inf(-1), "-Inf", valOK},
		{true, "true", valOK},
		{nil, "", valMissing},
		{map[string]any{"a": "b"}, "", valInvalid},
		{[]byte{1}, "", valInvalid},
	} {
		v := pcommon.NewValueEmpty()
		assert.NoError(t, v.FromRaw(tc.v))
		got, st := scalar(v)
		assert.Equal(t, tc.want, got, "%v", tc.v)
		assert.Equal(t, tc.st, st, "%v", tc.v)
	}
}

func TestIntegrateSplit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to int64
		want     map[int64]float64 // bucket start (hours) -> value
	}{
		{"within an hour", 10 * 60, 50 * 60, map[int64]float64{0: 2400}},
		{"ends on a boundary", 30 * 60, 60 * 60, map[int64]float64{0: 1800}},
		{"starts on a boundary", 60 * 60, 90 * 60, map[int64]float64{1: 1800}},
		{"spans three hours", 30 * 60, 150 * 60, map[int64]float64{0: 1800, 1: 3600, 2: 1800}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &stream{bucket: hour, Stream: Stream{Granularity: "HOURLY"}}
			tr := &Translator{agg: map[string]*aggEntry{}, streams: []*stream{s}, epoch: 1}
			tr.keyBuf = appendStr(make([]byte, 10), "a")
			base := int64(1767312000) * 1e9 // 2026-01-02T00:00Z
			tr.integrate(&Stats{}, s, base+tc.from*1e9, base+tc.to*1e9, 1, 0)
			got := map[int64]float64{}
			for k, e := range tr.agg {
				_, r := tr.decode(k)
				got[(r.Timestamp.UnixNano()-base)/hour] = e.v
			}
			assert.Equal(t, tc.want, got)
		})
	}
}
