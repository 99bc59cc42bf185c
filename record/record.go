// Package record defines CloudZero allocation records and the canonical key
// under which records of the same (timestamp, granularity, element, filter)
// merge. It is shared by the translator (which produces records) and the
// API client (which sends them); it has no dependencies outside the standard
// library.
package record // import "github.com/cloudzero-otel/cloudzeroexporter/record"

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Granularity is the time bucket a record covers.
type Granularity string

const (
	Hourly Granularity = "HOURLY"
	Daily  Granularity = "DAILY"
)

// Valid reports whether g is a granularity the exporter can send.
func (g Granularity) Valid() bool { return g == Hourly || g == Daily }

// Duration is the length of a bucket of granularity g (UTC days have no DST).
func (g Granularity) Duration() time.Duration {
	if g == Daily {
		return 24 * time.Hour
	}
	return time.Hour
}

// Truncate returns the start of the UTC bucket of granularity g containing t.
func (g Granularity) Truncate(t time.Time) time.Time {
	t = t.UTC()
	if g == Daily {
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	}
	return t.Truncate(time.Hour)
}

// CloudZero's documented limits (cloudzero-api.md). This package owns them;
// the config, translator and sender use these constants.
const (
	MaxFilterKeys   = 5
	MaxValuesPerKey = 20
	// MaxEncodedBytes is the conservative reading of the API's "10 KB" per
	// record: 10,000 bytes of encoded JSON. A record of 10,001-10,240 bytes
	// may be refused, and a refused record costs its whole request.
	MaxEncodedBytes    = 10_000
	MaxSignificantDigs = 15
	// MaxRecordsPerRequest is CloudZero's "roughly 10,000 records" per request.
	MaxRecordsPerRequest = 10_000
	// MaxStreamNameLen bounds a stream name (letters, digits, _ . -).
	MaxStreamNameLen = 256
)

// ValidStreamName reports why name is not a CloudZero stream name, or nil.
func ValidStreamName(name string) error {
	if len(name) == 0 || len(name) > MaxStreamNameLen {
		return fmt.Errorf("must be 1 to %d characters", MaxStreamNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("must match ^[A-Za-z0-9_.-]{1,%d}$", MaxStreamNameLen)
		}
	}
	if name == "." || name == ".." {
		return errors.New(". and .. are URL path segments, not stream names")
	}
	return nil
}

// FilterKeyProblem explains what is wrong with a CloudZero filter
// (dimension) key, or returns "" when it is acceptable: a key must not be
// empty, nor a bare "custom:" or "tag:" prefix, which CloudZero refuses.
// The exporter's config and the cloudzero command both use it.
func FilterKeyProblem(k string) string {
	if strings.TrimSpace(k) == "" {
		return "is empty"
	}
	for _, prefix := range []string{"custom:", "tag:"} {
		if strings.HasPrefix(k, prefix) && strings.TrimSpace(k[len(prefix):]) == "" {
			return fmt.Sprintf("is a bare prefix: name the dimension after %q", prefix)
		}
	}
	return ""
}

// Dimension is one filter key with its values (OR-ed by CloudZero).
type Dimension struct {
	Key    string
	Values []string
}

// Record is one allocation record: Value units used by ElementName during the
// bucket starting at Timestamp, within Filter.
type Record struct {
	Timestamp   time.Time
	Granularity Granularity
	ElementName string
	Filter      []Dimension
	Value       float64
}

// Errors returned by NewKey; the translator counts them as drop reasons.
var (
	ErrEmptyElement    = errors.New("empty element_name")
	ErrTooManyKeys     = fmt.Errorf("more than %d filter keys", MaxFilterKeys)
	ErrTooManyValues   = fmt.Errorf("more than %d values for a filter key", MaxValuesPerKey)
	ErrEmptyFilterKey  = errors.New("empty filter key or value list")
	ErrRecordTooLarge  = fmt.Errorf("encoded record larger than %d bytes", MaxEncodedBytes)
	ErrBadGranularity  = errors.New("granularity must be HOURLY or DAILY")
	ErrDuplicateFilter = errors.New("filter key given twice")
)

// Key is the canonical JSON encoding of a record without its value, ending
// just before the value: `{"timestamp":...,"filter":{...},"value":`. Two
// records with equal keys are the same CloudZero key and their values add up.
// Filter keys are sorted, values sorted and de-duplicated, so the encoding is
// canonical; the client completes a record by appending the value and `}`.
type Key string

// MaxValueChars is the longest value the exporter sends, as a plain decimal
// without exponent, rounded to the 15 significant digits CloudZero keeps:
// values from 1e64 up, and values below about 1e-48 whose digits would not
// fit, are out of range. No meter reports usage near either end, and the
// bound lets a record's size be known before its value (MaxEncodedBytes).
const MaxValueChars = 64

// ValueFits reports whether v can be sent: finite, and as a plain decimal
// rounded to 15 significant digits at most MaxValueChars characters. (A
// value must also be > 0; a caller that nets usage checks that itself.)
func ValueFits(v float64) bool {
	v = math.Abs(v)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return false
	}
	// Fast path: in [1e-6, 1e9) a value takes at most 9 integer digits or
	// 5 leading zeros, the point and 15 digits; formatting is costly.
	if v == 0 || (v >= 1e-6 && v < 1e9) {
		return true
	}
	var buf [80]byte
	return len(AppendValue(buf[:0], v)) <= MaxValueChars
}

// ValidValue says why v cannot be a record's value, or nil: CloudZero
// needs a number > 0, and it must fit MaxValueChars.
func ValidValue(v float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Errorf("value %v is not a finite number", v)
	case !(v > 0):
		return fmt.Errorf("value %v is not > 0 (CloudZero takes only positive values)", v)
	case !ValueFits(v):
		return fmt.Errorf("value %v does not fit %d plain decimal characters at 15 significant digits", v, MaxValueChars)
	}
	return nil
}

// maxValueBytes bounds the encoded value and closing brace `"123.456"}`.
const maxValueBytes = 2 + MaxValueChars + 1

// keyPrefix is how every key starts; the timestamp (RFC 3339, 20 bytes in
// UTC) and granularity follow at fixed offsets.
const (
	keyPrefix      = `{"timestamp":"`
	keyGranularity = `","granularity":"`
)

// Bucket returns the bucket start and granularity encoded in k.
func (k Key) Bucket() (time.Time, Granularity, error) {
	const tsEnd = len(keyPrefix) + len("2006-01-02T15:04:05Z")
	s := string(k)
	if len(s) < tsEnd+len(keyGranularity) || s[:len(keyPrefix)] != keyPrefix || s[tsEnd:tsEnd+len(keyGranularity)] != keyGranularity {
		return time.Time{}, "", errors.New("record: malformed key")
	}
	ts, err := time.Parse(time.RFC3339, s[len(keyPrefix):tsEnd])
	if err != nil {
		return time.Time{}, "", fmt.Errorf("record: malformed key timestamp: %w", err)
	}
	rest := s[tsEnd+len(keyGranularity):]
	for _, g := range []Granularity{Hourly, Daily} {
		if len(rest) > len(g) && rest[:len(g)] == string(g) && rest[len(g)] == '"' {
			return ts, g, nil
		}
	}
	return time.Time{}, "", errors.New("record: malformed key granularity")
}

// NewKey validates r (all but Value) against CloudZero's limits and returns
// its canonical key. Filter and its value slices are sorted in place.
func NewKey(r Record) (Key, error) {
	b, err := AppendKey(nil, r)
	return Key(b), err
}

// AppendKey is NewKey appending to dst, for callers that reuse a buffer.
func AppendKey(dst []byte, r Record) ([]byte, error) {
	if !r.Granularity.Valid() {
		return dst, ErrBadGranularity
	}
	if r.ElementName == "" {
		return dst, ErrEmptyElement
	}
	if len(r.Filter) > MaxFilterKeys {
		return dst, ErrTooManyKeys
	}
	slices.SortFunc(r.Filter, func(a, b Dimension) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	for i, d := range r.Filter {
		if d.Key == "" || len(d.Values) == 0 {
			return dst, ErrEmptyFilterKey
		}
		if i > 0 && r.Filter[i-1].Key == d.Key {
			return dst, ErrDuplicateFilter
		}
		if len(d.Values) > 1 {
			slices.Sort(d.Values)
			r.Filter[i].Values = slices.Compact(d.Values)
		}
		if len(r.Filter[i].Values) > MaxValuesPerKey {
			return dst, ErrTooManyValues
		}
	}
	start := len(dst)
	dst = append(dst, keyPrefix...)
	dst = r.Timestamp.UTC().AppendFormat(dst, time.RFC3339)
	dst = append(dst, keyGranularity...)
	dst = append(dst, r.Granularity...)
	dst = append(dst, `","element_name":`...)
	dst = AppendJSONString(dst, r.ElementName)
	if len(r.Filter) > 0 {
		dst = append(dst, `,"filter":{`...)
		for i, d := range r.Filter {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendJSONString(dst, d.Key)
			dst = append(dst, ":["...)
			for j, v := range d.Values {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = AppendJSONString(dst, v)
			}
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"value":`...)
	if len(dst)-start+maxValueBytes > MaxEncodedBytes {
		return dst[:start], ErrRecordTooLarge
	}
	return dst, nil
}

// AppendRecord appends the complete JSON record for key k with value v.
func AppendRecord(dst []byte, k Key, v float64) []byte {
	dst = append(dst, k...)
	dst = append(dst, '"')
	dst = AppendValue(dst, v)
	return append(dst, '"', '}')
}

// EncodedLen is the length AppendRecord produces for k and v, without
// allocating; used to size requests.
func EncodedLen(k Key, v float64) int {
	var buf [32]byte
	return len(k) + 3 + len(AppendValue(buf[:0], v))
}

// AppendValue appends v as a decimal without exponent, rounded to at most 15
// significant digits: CloudZero keeps about 15 and rejects exponents.
func AppendValue(dst []byte, v float64) []byte {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, '0')
	}
	// Round to 15 significant digits, then print the shortest decimal that
	// round-trips that value, in plain notation.
	v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'e', MaxSignificantDigs-1, 64), 64)
	return strconv.AppendFloat(dst, v, 'f', -1, 64)
}

// FormatValue is AppendValue returning a string.
func FormatValue(v float64) string { return string(AppendValue(nil, v)) }

const hex = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal. Invalid UTF-8 is
// replaced by U+FFFD, as encoding/json does, so output is always valid JSON.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
