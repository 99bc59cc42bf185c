package record

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppendValue(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{1, "1"},
		{0.1 + 0.2, "0.3"}, // rounded to 15 significant digits
		{250000000, "250000000"},
		{1e21, "1000000000000000000000"},
		{1.5e-7, "0.00000015"},
		{123456789012345678, "123456789012346000"}, // CloudZero keeps 15 digits
		{2.0000000000000004, "2"},
		{math.NaN(), "0"},
	}
	for _, tt := range tests {
		got := FormatValue(tt.in)
		assert.Equal(t, tt.want, got, "%v", tt.in)
		assert.NotContains(t, got, "e")
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"plain", `quote " and \ backslash`, "tab\tnew\nline\x01", "émoji 🎉", "bad \xff utf8", "</script>"} {
		var got string
		require.NoError(t, json.Unmarshal(AppendJSONString(nil, s), &got), "%q", s)
		assert.Equal(t, strings.ToValidUTF8(s, "\ufffd"), got)
	}
}

func TestNewKey(t *testing.T) {
	ts := time.Date(2026, 11, 23, 6, 0, 0, 0, time.FixedZone("CET", 3600))
	base := func() Record {
		return Record{Timestamp: ts, Granularity: Hourly, ElementName: "customer-1",
			Filter: []Dimension{{Key: "tag:env", Values: []string{"prod", "dev", "prod"}}, {Key: "custom:feature", Values: []string{"billing"}}}}
	}
	k, err := NewKey(base())
	require.NoError(t, err)
	full := string(AppendRecord(nil, k, 2.5))
	assert.JSONEq(t, `{"timestamp":"2026-11-23T05:00:00Z","granularity":"HOURLY","element_name":"customer-1",
		"filter":{"custom:feature":["billing"],"tag:env":["dev","prod"]},"value":"2.5"}`, full)
	assert.Equal(t, len(full), EncodedLen(k, 2.5))

	other := base()
	other.Filter[0], other.Filter[1] = other.Filter[1], other.Filter[0]
	k2, err := NewKey(other)
	require.NoError(t, err)
	assert.Equal(t, k, k2, "canonical: filter order does not matter")

	tooMany := make([]string, MaxValuesPerKey+1)
	for i := range tooMany {
		tooMany[i] = strings.Repeat("v", i+1)
	}
	bad := []struct {
		name string
		mod  func(*Record)
		want error
	}{
		{"granularity", func(r *Record) { r.Granularity = "WEEKLY" }, ErrBadGranularity},
		{"element", func(r *Record) { r.ElementName = "" }, ErrEmptyElement},
		{"keys", func(r *Record) {
			for _, k := range []string{"a", "b", "c", "d"} {
				r.Filter = append(r.Filter, Dimension{Key: k, Values: []string{"x"}})
			}
		}, ErrTooManyKeys},
		{"values", func(r *Record) { r.Filter[0].Values = tooMany }, ErrTooManyValues},
		{"empty key", func(r *Record) { r.Filter[0].Key = "" }, ErrEmptyFilterKey},
		{"duplicate key", func(r *Record) { r.Filter[1].Key = r.Filter[0].Key }, ErrDuplicateFilter},
		{"too large", func(r *Record) { r.ElementName = strings.Repeat("x", MaxEncodedBytes) }, ErrRecordTooLarge},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			tt.mod(&r)
			_, err := NewKey(r)
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

func TestSet(t *testing.T) {
	k1, _ := NewKey(Record{Granularity: Daily, ElementName: "a"})
	k2, _ := NewKey(Record{Granularity: Daily, ElementName: "b"})
	s := NewSet()
	s.Add("x", k1, 1)
	s.Add("x", k1, 2)
	s.Add("y", k1, -1)
	o := NewSet()
	o.Add("x", k2, 5)
	o.Add("x", k1, 1)
	s.Merge(o)
	assert.Equal(t, 3, s.Len())
	assert.Equal(t, []string{"x", "y"}, s.Streams())
	v, _ := s.Value("x", k1)
	assert.Equal(t, 4.0, v)
	assert.Equal(t, 1, s.RemoveNonPositive())
	assert.Equal(t, 2, s.Len())
	assert.Equal(t, []string{"x"}, s.Streams())
	var nilSet *Set
	assert.Zero(t, nilSet.Len())
}

// ValueFits' fast path must never claim a value fits that AppendValue
// prints longer; outside it, the printed length decides.
func TestValueFits(t *testing.T) {
	for _, v := range []float64{1e-6, 1.23456789012345e-6, 0.1 + 0.2, 1, 999999999.999999, 123456789.123456789,
		math.Nextafter(1e9, 0), 1.0 / 3, 2.0 / 3 * 1e-5, 1e30, 1.5e63, 1.234e-40, -5} {
		require.True(t, ValueFits(v), "%v", v)
		require.LessOrEqual(t, len(AppendValue(nil, math.Abs(v))), MaxValueChars, "%v", v)
	}
	for _, v := range []float64{1e64, 1.0 / 3 * 1e-48, math.NaN(), math.Inf(1), math.Inf(-1)} {
		require.False(t, ValueFits(v), "%v", v)
	}
	for v, want := range map[float64]string{
		0: "not > 0", -1: "not > 0", math.NaN(): "not a finite number", 1e64: "does not fit",
	} {
		require.ErrorContains(t, ValidValue(v), want, "%v", v)
	}
	require.NoError(t, ValidValue(0.5))
}

func TestFilterKeyProblem(t *testing.T) {
	for _, tt := range []struct {
		key, want string
	}{
		{"custom:feature", ""},
		{"tag:team", ""},
		{"region", ""},
		{"", "is empty"},
		{"  ", "is empty"},
		{"custom:", "is a bare prefix"},
		{"custom: ", "is a bare prefix"},
		{"tag:", "is a bare prefix"},
	} {
		got := FilterKeyProblem(tt.key)
		if tt.want == "" {
			assert.Empty(t, got, "%q", tt.key)
		} else {
			assert.Contains(t, got, tt.want, "%q", tt.key)
		}
	}
}
