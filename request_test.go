package cloudzeroexporter

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

func testKey(t testing.TB, element string) record.Key {
	t.Helper()
	k, err := record.NewKey(record.Record{
		Timestamp:   time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC),
		Granularity: record.Hourly,
		ElementName: element,
		Filter:      []record.Dimension{{Key: "custom:feature", Values: []string{"billing"}}},
	})
	require.NoError(t, err)
	return k
}

func testRequest(t testing.TB, stream string, n int, value float64) *recordsRequest {
	set := record.NewSet()
	for i := range n {
		set.Add(stream, testKey(t, fmt.Sprintf("customer-%04d", i)), value)
	}
	return newRecordsRequest(set, nil)
}

func total(reqs ...xexporterhelper.Request) (sum float64, items int) {
	for _, r := range reqs {
		set := r.(*recordsRequest).set
		for _, s := range set.Streams() {
			for _, v := range set.Records(s) {
				sum += v
				items++
			}
		}
	}
	return sum, items
}

func TestMergeAddsEqualKeys(t *testing.T) {
	a := testRequest(t, "s", 10, 1)
	b := testRequest(t, "s", 10, 2)
	parts, err := a.MergeSplit(context.Background(), 0, exporterhelper.RequestSizerTypeItems, b)
	require.NoError(t, err)
	require.Len(t, parts, 1)
	assert.Equal(t, 10, parts[0].ItemsCount(), "equal keys merge instead of adding records")
	sum, _ := total(parts...)
	assert.Equal(t, 30.0, sum)
}

func TestMergeSplit(t *testing.T) {
	tests := []struct {
		name    string
		records int
		other   int
		maxSize int
		szt     exporterhelper.RequestSizerType
		parts   []int // items per part
	}{
		{"fits", 3, 2, 10, exporterhelper.RequestSizerTypeItems, []int{5}},
		{"no limit", 30, 0, 0, exporterhelper.RequestSizerTypeItems, []int{30}},
		{"split items", 25, 0, 10, exporterhelper.RequestSizerTypeItems, []int{10, 10, 5}},
		{"split merged", 8, 4, 10, exporterhelper.RequestSizerTypeItems, []int{10, 2}},
		{"exact", 20, 0, 10, exporterhelper.RequestSizerTypeItems, []int{10, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testRequest(t, "a", tt.records, 1)
			var other xexporterhelper.Request
			if tt.other > 0 {
				other = testRequest(t, "b", tt.other, 1)
			}
			parts, err := r.MergeSplit(context.Background(), tt.maxSize, tt.szt, other)
			require.NoError(t, err)
			var got []int
			for _, p := range parts {
				got = append(got, p.ItemsCount())
			}
			assert.Equal(t, tt.parts, got)
			sum, items := total(parts...)
			assert.Equal(t, float64(tt.records+tt.other), sum, "nothing lost or doubled by a split")
			assert.Equal(t, tt.records+tt.other, items)
		})
	}
}

func TestMergeSplitBytes(t *testing.T) {
	r := testRequest(t, "a", 100, 1.5)
	one := r.BytesSize() / 100
	parts, err := r.MergeSplit(context.Background(), 10*one, exporterhelper.RequestSizerTypeBytes, nil)
	require.NoError(t, err)
	require.Len(t, parts, 10)
	for _, p := range parts {
		assert.LessOrEqual(t, p.BytesSize(), 10*one)
	}
	sum, items := total(parts...)
	assert.Equal(t, 150.0, sum)
	assert.Equal(t, 100, items)
}

func TestBytesSizeMatchesEncoding(t *testing.T) {
	r := testRequest(t, "a", 3, 2.25)
	want := 0
	for _, s := range r.set.Streams() {
		for k, v := range r.set.Records(s) {
			want += len(record.AppendRecord(nil, k, v)) + 1
		}
	}
	assert.Equal(t, want, r.BytesSize())
}

func TestOnErrorKeepsOnlyUnsent(t *testing.T) {
	r := testRequest(t, "a", 10, 1)
	unsent := testRequest(t, "a", 3, 1).set
	got := r.OnError(&unsentError{err: errors.New("503"), unsent: unsent})
	assert.Equal(t, 3, got.ItemsCount())
	assert.Same(t, r, r.OnError(errors.New("other")))
}

func TestEncodingRoundTrip(t *testing.T) {
	r := testRequest(t, "stream-a", 50, 0.1)
	r.set.Add("stream-b", testKey(t, `quote"and\backslash`), 1e15)
	b, err := requestEncoding{}.Marshal(context.Background(), r)
	require.NoError(t, err)
	_, got, err := requestEncoding{}.Unmarshal(b)
	require.NoError(t, err)
	assert.Equal(t, r.set, got.(*recordsRequest).set)

	for _, bad := range [][]byte{nil, []byte("XXXX"), b[:len(b)-3]} {
		_, _, err := requestEncoding{}.Unmarshal(bad)
		assert.Error(t, err)
	}
}

// exporterhelper's batcher ties the current batch's completion (its
// persistent-queue items) to the first part MergeSplit returns: that part
// must hold every record of the current batch.
func TestMergeSplitKeepsCurrentBatchFirst(t *testing.T) {
	cur := testRequest(t, "z", 2, 1)
	in := testRequest(t, "a", 3, 1)
	in.set.Add("z", testKey(t, "customer-0000"), 5) // same key as one of cur's: merges into it
	parts, err := cur.MergeSplit(context.Background(), 3, exporterhelper.RequestSizerTypeItems, in)
	require.NoError(t, err)
	require.Len(t, parts, 2)
	first := parts[0].(*recordsRequest).set
	for _, s := range cur.set.Streams() {
		for k := range cur.set.Records(s) {
			_, ok := first.Value(s, k)
			assert.True(t, ok, "record of the current batch not in the first part")
		}
	}
	v, _ := first.Value("z", testKey(t, "customer-0000"))
	assert.Equal(t, 6.0, v)
	assert.Equal(t, 3, parts[0].ItemsCount())
	assert.Equal(t, 2, parts[1].ItemsCount())
	sum, items := total(parts...)
	assert.Equal(t, 10.0, sum)
	assert.Equal(t, 5, items)
}
