// Package emulator is a local emulator of the CloudZero Allocation Telemetry API.
//
// It is written only from shared/docs/cloudzero-api.md and shares no code with the
// exporter: it is an independent oracle. This file holds the request schema
// validation, the in-memory store with its sum/replace/delete semantics, and the
// ledger types. handlers.go holds the HTTP layer, faults.go the fault injection and
// rate limits, page.go the HTML page.
//
// Choices made where cloudzero-api.md is silent or ambiguous (each is an inference):
//
//   - replace creates the stream when it does not exist (the endpoint table says so,
//     and so does CloudZero's reference page); "stream must exist" is applied to
//     delete only. Config.ReplaceRequiresStream switches to the stricter reading.
//   - A record key's filter is canonical: keys sorted, the values of a key sorted and
//     de-duplicated (values of one key are OR-ed, so they are a set).
//   - Several records with the same key in one request are applied in order: sum adds
//     them all, replace keeps the last one.
//   - delete: a stored entry matches when timestamp and granularity are equal, the
//     element_name is equal when the delete record gives one, and, for every filter
//     key the delete record gives, the entry's values for that key are a subset of the
//     delete record's values. The delete record's filter keys must be keys of the
//     stream; the "same key set in a request" rule is not applied to delete records.
//     A delete that matches nothing still answers 201. A deleted entry is gone from the
//     totals: a later sum on the same key starts again from zero.
//   - value: a JSON number (exponent allowed, it is valid JSON) or a decimal string
//     without exponent or sign ("12", "0.5"). Anything else, or a value <= 0, is 400.
//     Values are kept exactly (math/big.Rat); values with more than 15 significant
//     digits are accepted but counted in the ledger, since CloudZero would round them.
//   - timestamp: RFC 3339 (any offset, normalised to UTC). Zone-less forms
//     "2006-01-02T15:04:05" and "2006-01-02" are accepted as UTC (the API says ISO
//     8601 and works in UTC) but counted as non-canonical. Timestamps later than now +
//     Config.MaxFutureSkew (default 1 minute) are rejected.
//   - Unknown fields, in the body or in a record, are rejected with 400; "records"
//     must be a non-empty array; a filter of null is the same as no filter.
//   - Built-in filter dimensions: BuiltinFilterKeys (the doc names account, service
//     and region "such as"; the list is an inference), extendable by Config.
//   - Sizes use decimal units, the stricter reading: 5 MB = 5,000,000 bytes per
//     request, 10 KB = 10,000 bytes per record (the record's JSON text as sent).
package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Limits from cloudzero-api.md.
const (
	DefaultMaxBodyBytes   = 5_000_000
	DefaultMaxRecordBytes = 10_000
	MaxFilterKeys         = 5
	MaxFilterValues       = 20
	MaxSignificantDigits  = 15
)

// Granularities accepted by the API.
const (
	Hourly  = "HOURLY"
	Daily   = "DAILY"
	Monthly = "MONTHLY"
)

// BuiltinFilterKeys are the built-in CloudZero dimensions accepted as filter keys
// besides "custom:<name>" and "tag:<key>".
var BuiltinFilterKeys = []string{"account", "cloud_provider", "region", "resource", "service", "usage_family"}

// Operation is what a route does with its records.
type Operation int

// Operations.
const (
	OpSum Operation = iota
	OpReplace
	OpDelete
)

func (o Operation) String() string {
	switch o {
	case OpSum:
		return "sum"
	case OpReplace:
		return "replace"
	default:
		return "delete"
	}
}

var streamNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,256}$`)

// decimalStringRE is what a string value may look like: digits with an optional
// fraction, an optional leading minus (so that "-1" is reported as "must be > 0").
var decimalStringRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

var canonicalTimestampRE = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$`)

// apiError is a rejection: an HTTP status, a short machine-readable reason (counted
// in the ledger) and a human message.
type apiError struct {
	status  int
	reason  string
	message string
}

func (e *apiError) Error() string { return e.message }

func badRequest(reason, format string, args ...any) *apiError {
	return &apiError{status: 400, reason: reason, message: fmt.Sprintf(format, args...)}
}

// Rejection reasons (the keys of Ledger.RejectionsByReason).
const (
	ReasonAuth               = "unauthorized"
	ReasonContentType        = "content_type"
	ReasonContentEncoding    = "content_encoding"
	ReasonBodyTooLarge       = "body_too_large"
	ReasonInvalidJSON        = "invalid_json"
	ReasonEmptyRecords       = "empty_records"
	ReasonUnknownField       = "unknown_field"
	ReasonMissingField       = "missing_field"
	ReasonInvalidField       = "invalid_field"
	ReasonValueNotPositive   = "value_not_positive"
	ReasonValueNotAllowed    = "value_not_allowed"
	ReasonUnknownFilterKey   = "unknown_filter_key"
	ReasonFilterLimits       = "filter_limits"
	ReasonFutureTimestamp    = "future_timestamp"
	ReasonRecordTooLarge     = "record_too_large"
	ReasonStreamName         = "invalid_stream_name"
	ReasonRequestKeySet      = "request_filter_keys_differ"
	ReasonStreamKeySet       = "stream_filter_keys_differ"
	ReasonStreamGranularity  = "stream_granularity_differs"
	ReasonStreamMustExist    = "stream_must_exist"
	ReasonRateLimited        = "rate_limited"
	ReasonDailyBudget        = "daily_budget_exhausted"
	ReasonNotFound           = "not_found"
	ReasonMethodNotAllowed   = "method_not_allowed"
	ReasonInjected           = "injected_fault"
	ReasonClientGoneOrClosed = "client_gone"
)

// record is one validated record of a request.
type record struct {
	index       int
	stream      string // from the URL, or telemetry-stream on the legacy route
	ts          time.Time
	tsKey       string // normalised UTC RFC 3339
	granularity string
	element     string // "" when absent (delete only)
	value       *big.Rat
	filter      map[string][]string // canonical; nil when absent
	filterKey   string              // canonical serialisation of filter
	keySig      string              // sorted filter keys joined by "\x00"
	keys        []string

	unaligned    bool
	nonCanonical bool
	over15Digits bool
}

// parseOptions tell parseBody what the route expects.
type parseOptions struct {
	op             Operation
	legacy         bool // /unit-cost/v1/telemetry: telemetry-stream and element-name per record
	stream         string
	maxRecordBytes int
	now            time.Time
	maxFutureSkew  time.Duration
	filterKeys     map[string]bool
}

// parseBody decodes and validates a request body. It checks everything that does
// not depend on the store.
func parseBody(body []byte, o parseOptions) ([]record, *apiError) {
	var top map[string]json.RawMessage
	if err := strictUnmarshal(body, &top); err != nil {
		return nil, badRequest(ReasonInvalidJSON, "invalid JSON: %v", err)
	}
	if top == nil {
		return nil, badRequest(ReasonInvalidJSON, "invalid JSON: body must be an object")
	}
	for k := range top {
		if k != "records" {
			return nil, badRequest(ReasonUnknownField, "invalid schema: unknown field %q", k)
		}
	}
	rawRecords, ok := top["records"]
	if !ok || isNull(rawRecords) {
		return nil, badRequest(ReasonMissingField, "invalid schema: missing required field \"records\"")
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(rawRecords, &raws); err != nil {
		return nil, badRequest(ReasonInvalidField, "invalid schema: \"records\" must be an array of objects")
	}
	if len(raws) == 0 {
		return nil, badRequest(ReasonEmptyRecords, "invalid schema: \"records\" is empty")
	}
	recs := make([]record, 0, len(raws))
	for i, raw := range raws {
		r, err := parseRecord(i, raw, o)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	if o.op != OpDelete {
		for _, r := range recs[1:] {
			if r.keySig != recs[0].keySig {
				return nil, badRequest(ReasonRequestKeySet,
					"all records of a request must carry the same filter keys: records[0] has %s, records[%d] has %s",
					keyList(recs[0].keys), r.index, keyList(r.keys))
			}
		}
	}
	return recs, nil
}

func parseRecord(i int, raw json.RawMessage, o parseOptions) (record, *apiError) {
	r := record{index: i, stream: o.stream}
	if len(raw) > o.maxRecordBytes {
		return r, badRequest(ReasonRecordTooLarge, "records[%d] is %d bytes, over the %d-byte record limit", i, len(raw), o.maxRecordBytes)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return r, badRequest(ReasonInvalidField, "invalid schema: records[%d] must be an object", i)
	}
	elementField, streamField := "element_name", ""
	allowed := map[string]bool{"timestamp": true, "granularity": true, "value": true, "filter": true}
	if o.legacy {
		elementField, streamField = "element-name", "telemetry-stream"
		allowed[streamField] = true
	}
	allowed[elementField] = true
	for _, k := range sortedKeys(fields) {
		if !allowed[k] {
			return r, badRequest(ReasonUnknownField, "invalid schema: records[%d] has unknown field %q", i, k)
		}
	}

	if streamField != "" {
		s, err := requiredString(fields, streamField, i)
		if err != nil {
			return r, err
		}
		if !streamNameRE.MatchString(s) {
			return r, badRequest(ReasonStreamName, "records[%d].%s %q: a stream name is 1 to 256 letters, digits, '_', '.', '-'", i, streamField, s)
		}
		r.stream = s
	}

	// timestamp
	tsText, err := requiredString(fields, "timestamp", i)
	if err != nil {
		return r, err
	}
	ts, nonCanonical, perr := parseTimestamp(tsText)
	if perr != nil {
		return r, badRequest(ReasonInvalidField, "records[%d].timestamp %q: %v", i, tsText, perr)
	}
	if ts.After(o.now.Add(o.maxFutureSkew)) {
		return r, badRequest(ReasonFutureTimestamp, "records[%d].timestamp %s is in the future", i, tsText)
	}
	r.ts, r.tsKey, r.nonCanonical = ts, ts.Format(time.RFC3339Nano), nonCanonical

	// granularity
	g, err := requiredString(fields, "granularity", i)
	if err != nil {
		return r, err
	}
	switch g {
	case Hourly, Daily, Monthly:
	default:
		return r, badRequest(ReasonInvalidField, "records[%d].granularity %q: must be HOURLY, DAILY or MONTHLY", i, g)
	}
	r.granularity = g
	r.unaligned = !aligned(ts, g)

	// element_name: required except on delete, where it narrows.
	if o.op == OpDelete {
		if rawEl, ok := fields[elementField]; ok && !isNull(rawEl) {
			s, err := requiredString(fields, elementField, i)
			if err != nil {
				return r, err
			}
			r.element = s
		}
	} else {
		s, err := requiredString(fields, elementField, i)
		if err != nil {
			return r, err
		}
		r.element = s
	}

	// value
	rawValue, hasValue := fields["value"]
	if o.op == OpDelete {
		if hasValue {
			return r, badRequest(ReasonValueNotAllowed, "records[%d].value is not allowed on delete", i)
		}
	} else {
		if !hasValue || isNull(rawValue) {
			return r, badRequest(ReasonMissingField, "invalid schema: records[%d] is missing required field \"value\"", i)
		}
		v, over15, verr := parseValue(rawValue)
		if verr != nil {
			verr.message = fmt.Sprintf("records[%d].value %s: %s", i, string(rawValue), verr.message)
			return r, verr
		}
		r.value, r.over15Digits = v, over15
	}

	// filter
	if rawFilter, ok := fields["filter"]; ok && !isNull(rawFilter) {
		f, ferr := parseFilter(rawFilter, o.filterKeys)
		if ferr != nil {
			ferr.message = fmt.Sprintf("records[%d].filter: %s", i, ferr.message)
			return r, ferr
		}
		r.filter = f
	}
	r.keys = sortedKeys(r.filter)
	r.keySig = strings.Join(r.keys, "\x00")
	r.filterKey = canonicalFilterKey(r.filter)
	return r, nil
}

func requiredString(fields map[string]json.RawMessage, name string, i int) (string, *apiError) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return "", badRequest(ReasonMissingField, "invalid schema: records[%d] is missing required field %q", i, name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badRequest(ReasonInvalidField, "invalid schema: records[%d].%s must be a string", i, name)
	}
	if s == "" {
		return "", badRequest(ReasonInvalidField, "invalid schema: records[%d].%s must not be empty", i, name)
	}
	return s, nil
}

// parseTimestamp accepts RFC 3339 (normalised to UTC) and, as UTC, the zone-less
// ISO 8601 forms "2006-01-02T15:04:05[.fraction]" and "2006-01-02".
func parseTimestamp(s string) (t time.Time, nonCanonical bool, err error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), !canonicalTimestampRE.MatchString(s), nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, true, nil
		}
	}
	return time.Time{}, false, errors.New("not an ISO 8601 / RFC 3339 timestamp")
}

// aligned reports whether t (UTC) is the start of its hour, day or month.
func aligned(t time.Time, granularity string) bool {
	if t.Nanosecond() != 0 || t.Second() != 0 || t.Minute() != 0 {
		return false
	}
	switch granularity {
	case Hourly:
		return true
	case Daily:
		return t.Hour() == 0
	default:
		return t.Hour() == 0 && t.Day() == 1
	}
}

// parseValue reads a JSON number or a decimal string as an exact rational.
func parseValue(raw json.RawMessage) (v *big.Rat, over15 bool, e *apiError) {
	var text string
	switch {
	case len(raw) > 0 && raw[0] == '"':
		if err := json.Unmarshal(raw, &text); err != nil {
			return nil, false, badRequest(ReasonInvalidField, "not a string")
		}
		if !decimalStringRE.MatchString(text) {
			return nil, false, badRequest(ReasonInvalidField, "a string value must be a plain decimal number without exponent")
		}
	case len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')):
		text = string(raw) // valid JSON number syntax, checked by the decoder
	default:
		return nil, false, badRequest(ReasonInvalidField, "must be a number or a decimal string")
	}
	mantissa := text
	if i := strings.IndexAny(text, "eE"); i >= 0 {
		// Bound the exponent so that a tiny body cannot ask for a huge number.
		mantissa = text[:i]
		n, err := strconv.Atoi(strings.TrimPrefix(text[i+1:], "+"))
		if err != nil || n > 1000 || n < -1000 {
			return nil, false, badRequest(ReasonInvalidField, "exponent out of range")
		}
	}
	v, ok := new(big.Rat).SetString(text)
	if !ok {
		return nil, false, badRequest(ReasonInvalidField, "not a number")
	}
	if v.Sign() <= 0 {
		return nil, false, badRequest(ReasonValueNotPositive, "must be > 0")
	}
	return v, significantDigits(mantissa) > MaxSignificantDigits, nil
}

// significantDigits counts the digits of a decimal mantissa between its first and
// last non-zero digit.
func significantDigits(mantissa string) int {
	digits := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, mantissa)
	digits = strings.Trim(digits, "0")
	return len(digits)
}

func parseFilter(raw json.RawMessage, known map[string]bool) (map[string][]string, *apiError) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, badRequest(ReasonInvalidField, "must be an object of key -> list of strings")
	}
	if len(obj) > MaxFilterKeys {
		return nil, badRequest(ReasonFilterLimits, "%d keys, at most %d allowed", len(obj), MaxFilterKeys)
	}
	out := make(map[string][]string, len(obj))
	for _, k := range sortedKeys(obj) {
		if !validFilterKey(k, known) {
			return nil, badRequest(ReasonUnknownFilterKey, "unrecognized filter key %q (use custom:<name>, tag:<key> or a built-in dimension)", k)
		}
		var items []json.RawMessage
		if err := json.Unmarshal(obj[k], &items); err != nil || items == nil {
			return nil, badRequest(ReasonInvalidField, "key %q must map to a list of strings", k)
		}
		if len(items) == 0 || len(items) > MaxFilterValues {
			return nil, badRequest(ReasonFilterLimits, "key %q has %d values, 1 to %d allowed", k, len(items), MaxFilterValues)
		}
		set := make(map[string]bool, len(items))
		for _, it := range items {
			var s string
			if len(it) == 0 || it[0] != '"' || json.Unmarshal(it, &s) != nil {
				return nil, badRequest(ReasonInvalidField, "key %q must map to a list of strings", k)
			}
			set[s] = true
		}
		out[k] = sortedKeys(set)
	}
	return out, nil
}

func validFilterKey(k string, known map[string]bool) bool {
	for _, prefix := range []string{"custom:", "tag:"} {
		if strings.HasPrefix(k, prefix) {
			return strings.TrimSpace(k[len(prefix):]) != ""
		}
	}
	return known[k]
}

// canonicalFilterKey serialises a canonical filter; it is JSON so it is unambiguous.
func canonicalFilterKey(f map[string][]string) string {
	if len(f) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(f) // map keys are sorted by encoding/json; values already sorted
	return string(b)
}

func keyList(keys []string) string {
	if len(keys) == 0 {
		return "no filter keys"
	}
	return "[" + strings.Join(keys, ", ") + "]"
}

// ---- store -----------------------------------------------------------------

type entryKey struct {
	ts      string
	element string
	filter  string
}

type entry struct {
	ts          time.Time
	tsKey       string
	granularity string
	element     string
	filter      map[string][]string
	filterKey   string
	value       *big.Rat
	writes      int64
}

type stream struct {
	name        string
	granularity string
	keys        []string
	keySig      string
	entries     map[entryKey]*entry
	applied     int64 // sum/replace records applied
	deleted     int64 // entries removed by delete
}

// store holds the streams. It is not safe for concurrent use: Server serialises.
type store struct {
	streams map[string]*stream
}

func newStore() *store { return &store{streams: map[string]*stream{}} }

// pendingStream is a stream's fixed properties while a request is validated.
type pendingStream struct {
	granularity string
	keys        []string
	keySig      string
}

// check validates a parsed request against the streams, without changing them.
func (s *store) check(op Operation, recs []record, replaceRequiresStream bool) *apiError {
	pending := map[string]pendingStream{}
	for _, r := range recs {
		ps, ok := pending[r.stream]
		if !ok {
			if st := s.streams[r.stream]; st != nil {
				ps, ok = pendingStream{st.granularity, st.keys, st.keySig}, true
			}
		}
		if !ok {
			if op == OpDelete || (op == OpReplace && replaceRequiresStream) {
				return badRequest(ReasonStreamMustExist, "stream %q must exist for %s", r.stream, op)
			}
			// The first record fixes the stream (within this request already).
			pending[r.stream] = pendingStream{r.granularity, r.keys, r.keySig}
			continue
		}
		pending[r.stream] = ps
		if r.granularity != ps.granularity {
			return badRequest(ReasonStreamGranularity,
				"records[%d]: all records in a stream must have the stream's granularity: stream %q is %s, record is %s",
				r.index, r.stream, ps.granularity, r.granularity)
		}
		if op == OpDelete {
			for _, k := range r.keys {
				if !contains(ps.keys, k) {
					return badRequest(ReasonStreamKeySet, "records[%d]: filter key %q is not a key of stream %q %s", r.index, k, r.stream, keyList(ps.keys))
				}
			}
			continue
		}
		if r.keySig != ps.keySig {
			return badRequest(ReasonStreamKeySet,
				"records[%d]: all records in a stream must contain the same filter keys: stream %q has %s, record has %s",
				r.index, r.stream, keyList(ps.keys), keyList(r.keys))
		}
	}
	return nil
}

// apply applies a request that check accepted. It returns the number of entries a
// delete removed.
func (s *store) apply(op Operation, recs []record) (deleted int64) {
	for _, r := range recs {
		st := s.streams[r.stream]
		if st == nil {
			st = &stream{name: r.stream, granularity: r.granularity, keys: r.keys, keySig: r.keySig,
				entries: map[entryKey]*entry{}}
			s.streams[r.stream] = st
		}
		if op == OpDelete {
			for k, e := range st.entries {
				if deleteMatches(r, e) {
					delete(st.entries, k)
					st.deleted++
					deleted++
				}
			}
			continue
		}
		k := entryKey{r.tsKey, r.element, r.filterKey}
		e := st.entries[k]
		if e == nil {
			e = &entry{ts: r.ts, tsKey: r.tsKey, granularity: r.granularity, element: r.element,
				filter: r.filter, filterKey: r.filterKey, value: new(big.Rat)}
			st.entries[k] = e
		}
		if op == OpSum {
			e.value.Add(e.value, r.value)
		} else {
			e.value.Set(r.value)
		}
		e.writes++
		st.applied++
	}
	return deleted
}

func deleteMatches(r record, e *entry) bool {
	if e.tsKey != r.tsKey || e.granularity != r.granularity {
		return false
	}
	if r.element != "" && e.element != r.element {
		return false
	}
	for k, want := range r.filter {
		have, ok := e.filter[k]
		if !ok {
			return false
		}
		for _, v := range have {
			if !contains(want, v) {
				return false
			}
		}
	}
	return true
}

// ---- ledger ----------------------------------------------------------------

// Ledger is what GET /emulator/ledger returns. Slices are sorted and maps are
// encoded with sorted keys, so the JSON is stable.
type Ledger struct {
	// Streams sorted by name.
	Streams []StreamLedger `json:"streams"`
	// RequestsByStatus counts API requests (the /unit-cost/ routes) by HTTP status.
	RequestsByStatus map[string]int64 `json:"requests_by_status"`
	// RequestsByRoute counts API requests by route (RouteSum ... RouteUnknown), then status.
	RequestsByRoute map[string]map[string]int64 `json:"requests_by_route"`
	// RecordsAccepted counts the records of every applied request (delete included,
	// ambiguous ones included).
	RecordsAccepted        int64            `json:"records_accepted"`
	RecordsAcceptedByRoute map[string]int64 `json:"records_accepted_by_route"`
	// EntriesDeleted counts stored entries removed by delete requests.
	EntriesDeleted int64 `json:"entries_deleted"`
	// UnalignedRecords counts accepted records whose timestamp is not the start of
	// their hour (HOURLY), UTC day (DAILY) or UTC month (MONTHLY).
	UnalignedRecords int64 `json:"unaligned_records"`
	// NonCanonicalTimestamps counts accepted records whose timestamp was not written
	// as YYYY-MM-DDTHH:MM:SSZ.
	NonCanonicalTimestamps int64 `json:"non_canonical_timestamps"`
	// ValuesOver15Digits counts accepted values with more than 15 significant digits.
	ValuesOver15Digits int64 `json:"values_over_15_significant_digits"`
	// AmbiguousApplied*: requests that were applied but answered with an injected
	// error status ("apply": true fault steps).
	AmbiguousAppliedRequests int64 `json:"ambiguous_applied_requests"`
	AmbiguousAppliedRecords  int64 `json:"ambiguous_applied_records"`
	// AmbiguousAppliedUnits is the exact sum of the values those requests added
	// (sum route): what a client that re-sends them counts twice.
	AmbiguousAppliedUnits string `json:"ambiguous_applied_units"`
	// AbandonedApplied*: requests that were applied, then delayed by a fault step,
	// and whose client went away before the answer (a client-side timeout).
	// A request can be both ambiguous and abandoned: do not add the two up.
	AbandonedAppliedRequests int64 `json:"abandoned_applied_requests"`
	AbandonedAppliedRecords  int64 `json:"abandoned_applied_records"`
	// InjectedFaults counts requests answered by a fault step's status, by status
	// (ambiguous ones included).
	InjectedFaults map[string]int64 `json:"injected_faults"`
	// RejectionsByReason counts non-2xx answers by reason (see the Reason* constants).
	RejectionsByReason map[string]int64 `json:"rejections_by_reason"`
	// RecentErrors holds the last errors answered, oldest first.
	RecentErrors []ErrorEntry `json:"recent_errors"`
}

// StreamLedger is one stream's state.
type StreamLedger struct {
	Name        string   `json:"name"`
	Granularity string   `json:"granularity"`
	FilterKeys  []string `json:"filter_keys"`
	// Total is the exact sum of the live entries' values, as a decimal string.
	Total string `json:"total"`
	// RecordsApplied counts sum/replace records applied to the stream.
	RecordsApplied int64 `json:"records_applied"`
	// EntriesDeleted counts entries removed by delete.
	EntriesDeleted int64 `json:"entries_deleted"`
	// Entries sorted by timestamp, element_name, then canonical filter.
	Entries []EntryLedger `json:"entries"`
}

// EntryLedger is one stored key and its value.
type EntryLedger struct {
	Timestamp   string              `json:"timestamp"` // UTC, RFC 3339
	Granularity string              `json:"granularity"`
	ElementName string              `json:"element_name"`
	Filter      map[string][]string `json:"filter"` // canonical: values sorted, de-duplicated; {} when none
	Value       string              `json:"value"`  // exact decimal
	Writes      int64               `json:"writes"` // records that wrote this key
}

// ErrorEntry is one answered error.
type ErrorEntry struct {
	Time    string `json:"time"`
	Route   string `json:"route"`
	Stream  string `json:"stream,omitempty"`
	Status  int    `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// snapshot renders the streams for the ledger.
func (s *store) snapshot() []StreamLedger {
	out := make([]StreamLedger, 0, len(s.streams))
	for _, name := range sortedKeys(s.streams) {
		st := s.streams[name]
		sl := StreamLedger{Name: name, Granularity: st.granularity, FilterKeys: append([]string{}, st.keys...),
			RecordsApplied: st.applied, EntriesDeleted: st.deleted, Entries: []EntryLedger{}}
		total := new(big.Rat)
		for _, e := range sortedEntries(st) {
			total.Add(total, e.value)
			f := map[string][]string{}
			for k, v := range e.filter {
				f[k] = append([]string{}, v...)
			}
			sl.Entries = append(sl.Entries, EntryLedger{Timestamp: e.tsKey, Granularity: e.granularity,
				ElementName: e.element, Filter: f, Value: FormatDecimal(e.value), Writes: e.writes})
		}
		sl.Total = FormatDecimal(total)
		out = append(out, sl)
	}
	return out
}

func sortedEntries(st *stream) []*entry {
	es := make([]*entry, 0, len(st.entries))
	for _, e := range st.entries {
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if !a.ts.Equal(b.ts) {
			return a.ts.Before(b.ts)
		}
		if a.element != b.element {
			return a.element < b.element
		}
		return a.filterKey < b.filterKey
	})
	return es
}

// FormatDecimal renders r exactly as a decimal string. r must have a finite decimal
// expansion (denominator of the form 2^a 5^b), which holds for sums of decimals;
// otherwise it is rounded to 30 places.
func FormatDecimal(r *big.Rat) string {
	d := new(big.Int).Set(r.Denom())
	places := 0
	for _, p := range []int64{2, 5} {
		n, q, m, bp := 0, new(big.Int), new(big.Int), big.NewInt(p)
		for {
			q.QuoRem(d, bp, m)
			if m.Sign() != 0 {
				break
			}
			d.Set(q)
			n++
		}
		places = max(places, n)
	}
	if d.Cmp(big.NewInt(1)) != 0 {
		places = 30
	}
	s := r.FloatString(places)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// ---- helpers ---------------------------------------------------------------

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
