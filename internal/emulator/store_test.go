package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFormatDecimal(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0", "0"},
		{"3", "3"},
		{"0.3", "0.3"},
		{"1/8", "0.125"},
		{"250000000", "250000000"},
		{"123456789012345.000001", "123456789012345.000001"},
		{"1e-20", "0.00000000000000000001"},
		{"1.50", "1.5"},
		{"1/3", "0.333333333333333333333333333333"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, ok := new(big.Rat).SetString(tt.in)
			require.True(t, ok)
			assert.Equal(t, tt.want, FormatDecimal(r))
		})
	}
}

func TestParseValue(t *testing.T) {
	tests := []struct {
		raw    string
		want   string // "" when rejected
		reason string
		over15 bool
	}{
		{`"250000000"`, "250000000", "", false},
		{`"0.1"`, "0.1", "", false},
		{`0.2`, "0.2", "", false},
		{`1e3`, "1000", "", false},
		{`1.5E-2`, "0.015", "", false},
		{`"1234567890.12345"`, "1234567890.12345", "", false},
		{`"1234567890.123456"`, "1234567890.123456", "", true},
		{`0`, "", ReasonValueNotPositive, false},
		{`"0.000"`, "", ReasonValueNotPositive, false},
		{`-1`, "", ReasonValueNotPositive, false},
		{`"-1"`, "", ReasonValueNotPositive, false},
		{`"1e3"`, "", ReasonInvalidField, false},
		{`"+1"`, "", ReasonInvalidField, false},
		{`"1,000"`, "", ReasonInvalidField, false},
		{`"abc"`, "", ReasonInvalidField, false},
		{`""`, "", ReasonInvalidField, false},
		{`" 1"`, "", ReasonInvalidField, false},
		{`true`, "", ReasonInvalidField, false},
		{`{}`, "", ReasonInvalidField, false},
		{`[1]`, "", ReasonInvalidField, false},
		{`1e999999`, "", ReasonInvalidField, false},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			v, over15, err := parseValue(json.RawMessage(tt.raw))
			if tt.want == "" {
				require.NotNil(t, err)
				assert.Equal(t, tt.reason, err.reason)
				return
			}
			require.Nil(t, err)
			assert.Equal(t, tt.want, FormatDecimal(v))
			assert.Equal(t, tt.over15, over15)
		})
	}
}

func TestParseTimestamp(t *testing.T) {
	tests := []struct {
		in           string
		want         string
		nonCanonical bool
		ok           bool
	}{
		{"2026-03-10T12:00:00Z", "2026-03-10T12:00:00Z", false, true},
		{"2026-03-10T12:00:00+00:00", "2026-03-10T12:00:00Z", true, true},
		{"2026-03-10T14:00:00+02:00", "2026-03-10T12:00:00Z", true, true},
		{"2026-03-10T12:00:00.5Z", "2026-03-10T12:00:00.5Z", true, true},
		{"2026-03-10T12:00:00", "2026-03-10T12:00:00Z", true, true},
		{"2026-03-10", "2026-03-10T00:00:00Z", true, true},
		{"10/03/2026", "", false, false},
		{"2026-03-10 12:00:00Z", "", false, false},
		{"", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ts, nc, err := parseTimestamp(tt.in)
			if !tt.ok {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, ts.Format("2006-01-02T15:04:05.999999999Z07:00"))
			assert.Equal(t, tt.nonCanonical, nc)
		})
	}
}

func TestAligned(t *testing.T) {
	tests := []struct {
		ts, g string
		want  bool
	}{
		{"2026-03-10T12:00:00Z", Hourly, true},
		{"2026-03-10T12:30:00Z", Hourly, false},
		{"2026-03-10T12:00:01Z", Hourly, false},
		{"2026-03-10T12:00:00.001Z", Hourly, false},
		{"2026-03-10T00:00:00Z", Daily, true},
		{"2026-03-10T12:00:00Z", Daily, false},
		{"2026-03-01T00:00:00Z", Monthly, true},
		{"2026-03-02T00:00:00Z", Monthly, false},
	}
	for _, tt := range tests {
		t.Run(tt.ts+"/"+tt.g, func(t *testing.T) {
			ts, _, err := parseTimestamp(tt.ts)
			require.NoError(t, err)
			assert.Equal(t, tt.want, aligned(ts, tt.g))
		})
	}
}

// TestValidation sends one request per rule to a fresh emulator and checks the
// status, the reason, and that nothing was stored (all-or-nothing).
func TestValidation(t *testing.T) {
	good := func() map[string]any { return rec(hour0, Hourly, "cust-1", "1.5", env("prod")) }
	with := func(k string, v any) map[string]any {
		r := good()
		r[k] = v
		return r
	}
	without := func(k string) map[string]any {
		r := good()
		delete(r, k)
		return r
	}
	manyKeys := map[string][]string{}
	for i := range 6 {
		manyKeys[fmt.Sprintf("custom:k%d", i)] = []string{"v"}
	}
	manyValues := make([]string, 21)
	for i := range manyValues {
		manyValues[i] = fmt.Sprintf("v%d", i)
	}
	twentyValues := manyValues[:20]
	fiveKeys := map[string][]string{"custom:a": {"1"}, "tag:b": {"2"}, "account": {"3"}, "service": {"4"}, "region": {"5"}}
	big := good()
	big["element_name"] = strings.Repeat("x", DefaultMaxRecordBytes)

	tests := []struct {
		name   string
		path   string
		body   any
		status int
		reason string
	}{
		{"valid", streamURL("s", "sum"), body(good()), 200, ""},
		{"valid number value", streamURL("s", "sum"), body(with("value", 2.5)), 200, ""},
		{"valid five keys", streamURL("s", "sum"), body(with("filter", fiveKeys)), 200, ""},
		{"valid twenty values", streamURL("s", "sum"), body(with("filter", env(twentyValues...))), 200, ""},
		{"valid no filter", streamURL("s", "sum"), body(without("filter")), 200, ""},
		{"valid null filter", streamURL("s", "sum"), body(with("filter", nil)), 200, ""},
		{"valid within future skew", streamURL("s", "sum"), body(with("timestamp", "2026-03-10T12:35:50Z")), 200, ""},
		{"valid MONTHLY", streamURL("s", "sum"), body(with("granularity", Monthly)), 200, ""},
		{"valid 256-char stream", streamURL(strings.Repeat("a", 256), "sum"), body(good()), 200, ""},
		{"valid stream chars", streamURL("A-z_0.9", "sum"), body(good()), 200, ""},

		{"invalid JSON", streamURL("s", "sum"), `{"records": [`, 400, ReasonInvalidJSON},
		{"trailing data", streamURL("s", "sum"), `{"records": []} {}`, 400, ReasonInvalidJSON},
		{"trailing brace", streamURL("s", "sum"), `{"records": []}}`, 400, ReasonInvalidJSON},
		{"body is an array", streamURL("s", "sum"), `[]`, 400, ReasonInvalidJSON},
		{"body is null", streamURL("s", "sum"), `null`, 400, ReasonInvalidJSON},
		{"empty body", streamURL("s", "sum"), ``, 400, ReasonInvalidJSON},
		{"missing records", streamURL("s", "sum"), `{}`, 400, ReasonMissingField},
		{"null records", streamURL("s", "sum"), `{"records": null}`, 400, ReasonMissingField},
		{"records not an array", streamURL("s", "sum"), `{"records": {}}`, 400, ReasonInvalidField},
		{"empty records", streamURL("s", "sum"), `{"records": []}`, 400, ReasonEmptyRecords},
		{"unknown top-level field", streamURL("s", "sum"), map[string]any{"records": []any{good()}, "x": 1}, 400, ReasonUnknownField},
		{"record not an object", streamURL("s", "sum"), `{"records": [1]}`, 400, ReasonInvalidField},
		{"record null", streamURL("s", "sum"), `{"records": [null]}`, 400, ReasonInvalidField},
		{"unknown record field", streamURL("s", "sum"), body(with("unit", "bytes")), 400, ReasonUnknownField},
		{"hyphenated element-name on new route", streamURL("s", "sum"), body(with("element-name", "x")), 400, ReasonUnknownField},
		{"telemetry-stream on new route", streamURL("s", "sum"), body(with("telemetry-stream", "x")), 400, ReasonUnknownField},
		{"missing timestamp", streamURL("s", "sum"), body(without("timestamp")), 400, ReasonMissingField},
		{"missing granularity", streamURL("s", "sum"), body(without("granularity")), 400, ReasonMissingField},
		{"missing element_name", streamURL("s", "sum"), body(without("element_name")), 400, ReasonMissingField},
		{"missing value", streamURL("s", "sum"), body(without("value")), 400, ReasonMissingField},
		{"null value", streamURL("s", "sum"), body(with("value", nil)), 400, ReasonMissingField},
		{"empty element_name", streamURL("s", "sum"), body(with("element_name", "")), 400, ReasonInvalidField},
		{"element_name not a string", streamURL("s", "sum"), body(with("element_name", 7)), 400, ReasonInvalidField},
		{"bad timestamp", streamURL("s", "sum"), body(with("timestamp", "yesterday")), 400, ReasonInvalidField},
		{"timestamp not a string", streamURL("s", "sum"), body(with("timestamp", 1700000000)), 400, ReasonInvalidField},
		{"future timestamp", streamURL("s", "sum"), body(with("timestamp", "2026-03-10T13:00:00Z")), 400, ReasonFutureTimestamp},
		{"just past the skew", streamURL("s", "sum"), body(with("timestamp", "2026-03-10T12:35:57Z")), 400, ReasonFutureTimestamp},
		{"lowercase granularity", streamURL("s", "sum"), body(with("granularity", "hourly")), 400, ReasonInvalidField},
		{"WEEKLY granularity", streamURL("s", "sum"), body(with("granularity", "WEEKLY")), 400, ReasonInvalidField},
		{"zero value", streamURL("s", "sum"), body(with("value", 0)), 400, ReasonValueNotPositive},
		{"negative value", streamURL("s", "sum"), body(with("value", "-3")), 400, ReasonValueNotPositive},
		{"exponent string", streamURL("s", "sum"), body(with("value", "1e3")), 400, ReasonInvalidField},
		{"non-numeric string", streamURL("s", "sum"), body(with("value", "lots")), 400, ReasonInvalidField},
		{"boolean value", streamURL("s", "sum"), body(with("value", true)), 400, ReasonInvalidField},
		{"filter not an object", streamURL("s", "sum"), body(with("filter", []string{"a"})), 400, ReasonInvalidField},
		{"filter value a string", streamURL("s", "sum"), body(with("filter", map[string]any{"tag:env": "prod"})), 400, ReasonInvalidField},
		{"filter value numbers", streamURL("s", "sum"), body(with("filter", map[string]any{"tag:env": []int{1}})), 400, ReasonInvalidField},
		{"filter value null item", streamURL("s", "sum"), body(with("filter", map[string]any{"tag:env": []any{nil}})), 400, ReasonInvalidField},
		{"filter empty list", streamURL("s", "sum"), body(with("filter", map[string]any{"tag:env": []string{}})), 400, ReasonFilterLimits},
		{"unknown filter key", streamURL("s", "sum"), body(with("filter", map[string][]string{"feature": {"a"}})), 400, ReasonUnknownFilterKey},
		{"unknown prefix", streamURL("s", "sum"), body(with("filter", map[string][]string{"label:x": {"a"}})), 400, ReasonUnknownFilterKey},
		{"custom: without name", streamURL("s", "sum"), body(with("filter", map[string][]string{"custom:": {"a"}})), 400, ReasonUnknownFilterKey},
		{"tag: without key", streamURL("s", "sum"), body(with("filter", map[string][]string{"tag: ": {"a"}})), 400, ReasonUnknownFilterKey},
		{"built-in key wrong case", streamURL("s", "sum"), body(with("filter", map[string][]string{"Account": {"a"}})), 400, ReasonUnknownFilterKey},
		{"six filter keys", streamURL("s", "sum"), body(with("filter", manyKeys)), 400, ReasonFilterLimits},
		{"21 filter values", streamURL("s", "sum"), body(with("filter", env(manyValues...))), 400, ReasonFilterLimits},
		{"record over 10 KB", streamURL("s", "sum"), body(big), 400, ReasonRecordTooLarge},
		{"different key sets in a request", streamURL("s", "sum"),
			body(good(), rec(hour0, Hourly, "c2", "1", map[string][]string{"tag:team": {"a"}})), 400, ReasonRequestKeySet},
		{"filter and no filter in a request", streamURL("s", "sum"),
			body(good(), rec(hour0, Hourly, "c2", "1", nil)), 400, ReasonRequestKeySet},
		{"second record invalid", streamURL("s", "sum"), body(good(), with("value", -1)), 400, ReasonValueNotPositive},
		{"stream name with a space", "/unit-cost/v1/telemetry/allocation/bad%20name/sum", body(good()), 400, ReasonStreamName},
		{"stream name with a slash", "/unit-cost/v1/telemetry/allocation/a%2Fb/sum", body(good()), 400, ReasonStreamName},
		{"stream name too long", streamURL(strings.Repeat("a", 257), "sum"), body(good()), 400, ReasonStreamName},
		{"empty stream name", streamURL("", "sum"), body(good()), 400, ReasonStreamName},
		{"unicode stream name", streamURL("caf%C3%A9", "sum"), body(good()), 400, ReasonStreamName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := f.post(tt.path, tt.body)
			require.Equal(t, tt.status, r.status, r.body)
			assert.Equal(t, tt.reason, r.reason)
			l := f.ledger()
			if tt.status != 200 {
				assert.Empty(t, l.Streams, "a rejected request must store nothing")
				assert.Equal(t, int64(1), l.RejectionsByReason[tt.reason])
				require.Len(t, l.RecentErrors, 1)
				assert.Equal(t, tt.reason, l.RecentErrors[0].Reason)
			} else {
				assert.Len(t, l.Streams, 1)
				assert.Equal(t, int64(1), l.RecordsAccepted)
			}
		})
	}
}

func TestFutureSkewConfig(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxFutureSkew = -1 })
	r := f.post(streamURL("s", "sum"), body(rec("2026-03-10T12:34:57Z", Hourly, "a", 1, nil)))
	assert.Equal(t, 400, r.status)
	assert.Equal(t, ReasonFutureTimestamp, r.reason)
	r = f.post(streamURL("s", "sum"), body(rec("2026-03-10T12:34:56Z", Hourly, "a", 1, nil)))
	assert.Equal(t, 200, r.status, r.body)
}

func TestExtraFilterKeys(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ExtraFilterKeys = []string{"feature"} })
	r := f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, map[string][]string{"feature": {"billing"}})))
	assert.Equal(t, 200, r.status, r.body)
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name   string
		header string // "" removes it
		status int
	}{
		{"valid", testKey, 200},
		{"missing", "", 403},
		{"wrong", "other-key", 403},
		{"bearer", "Bearer " + testKey, 403},
		{"prefix of the key", testKey[:5], 403},
		{"key with trailing text", testKey + "x", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			b, err := json.Marshal(body(rec(hour0, Hourly, "a", 1, nil)))
			require.NoError(t, err)
			r := f.do(http.MethodPost, streamURL("s", "sum"), bytes.NewReader(b), map[string]string{"Authorization": tt.header})
			require.Equal(t, tt.status, r.status)
			assert.NotContains(t, r.body, testKey)
			l := f.ledger()
			if tt.status == 403 {
				assert.Empty(t, l.Streams)
				assert.Equal(t, int64(1), l.RejectionsByReason[ReasonAuth])
			}
		})
	}
}

func TestHeadersAndSize(t *testing.T) {
	valid, err := json.Marshal(body(rec(hour0, Hourly, "a", 1, nil)))
	require.NoError(t, err)
	// padded is a valid body of exactly n bytes (spaces after the JSON).
	padded := func(n int) []byte {
		return append(append([]byte{}, valid...), bytes.Repeat([]byte(" "), n-len(valid))...)
	}

	tests := []struct {
		name    string
		body    func() io.Reader
		headers map[string]string
		status  int
		reason  string
	}{
		{"json with charset", func() io.Reader { return bytes.NewReader(valid) }, map[string]string{"Content-Type": "application/json; charset=utf-8"}, 200, ""},
		{"no content type", func() io.Reader { return bytes.NewReader(valid) }, map[string]string{"Content-Type": ""}, 400, ReasonContentType},
		{"text/plain", func() io.Reader { return bytes.NewReader(valid) }, map[string]string{"Content-Type": "text/plain"}, 400, ReasonContentType},
		{"gzip encoding", func() io.Reader { return bytes.NewReader(valid) }, map[string]string{"Content-Encoding": "gzip"}, 400, ReasonContentEncoding},
		{"exactly 5,000,000 bytes", func() io.Reader { return bytes.NewReader(padded(DefaultMaxBodyBytes)) }, nil, 200, ""},
		{"5,000,001 bytes", func() io.Reader { return bytes.NewReader(padded(DefaultMaxBodyBytes + 1)) }, nil, 413, ReasonBodyTooLarge},
		{"5,000,001 bytes chunked", func() io.Reader { return io.MultiReader(bytes.NewReader(padded(DefaultMaxBodyBytes + 1))) }, nil, 413, ReasonBodyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := f.do(http.MethodPost, streamURL("s", "sum"), tt.body(), tt.headers)
			require.Equal(t, tt.status, r.status, r.body)
			assert.Equal(t, tt.reason, r.reason)
			if tt.status != 200 {
				assert.Empty(t, f.ledger().Streams)
			}
		})
	}
}

func TestRoutesAndMethods(t *testing.T) {
	f := newFixture(t)
	b := func() io.Reader {
		j, err := json.Marshal(body(rec(hour0, Hourly, "a", 1, nil)))
		require.NoError(t, err)
		return bytes.NewReader(j)
	}
	tests := []struct {
		method, path string
		status       int
		route        string
	}{
		{http.MethodGet, streamURL("s", "sum"), 405, RouteSum},
		{http.MethodPut, streamURL("s", "replace"), 405, RouteReplace},
		{http.MethodGet, "/unit-cost/v1/telemetry", 405, RouteLegacy},
		{http.MethodPost, "/unit-cost/v1/other", 404, RouteUnknown},
		{http.MethodPost, streamURL("s", "sum") + "/extra", 404, RouteUnknown},
		{http.MethodPost, streamURL("s", "add"), 404, RouteUnknown},
		{http.MethodPost, streamURL("s", "sum") + "/", 404, RouteUnknown},
		{http.MethodPost, "/unit-cost/v1/telemetry/", 404, RouteUnknown},
	}
	for _, tt := range tests {
		r := f.do(tt.method, tt.path, b(), nil)
		assert.Equal(t, tt.status, r.status, "%s %s", tt.method, tt.path)
	}
	l := f.ledger()
	assert.Equal(t, int64(2), l.RequestsByRoute[RouteSum]["405"]+l.RequestsByRoute[RouteReplace]["405"])
	assert.Equal(t, int64(5), l.RequestsByRoute[RouteUnknown]["404"])
	assert.Equal(t, int64(3), l.RequestsByStatus["405"])
	assert.Empty(t, l.Streams)

	code, _ := f.admin(http.MethodGet, "/nope", "")
	assert.Equal(t, 404, code)
}
