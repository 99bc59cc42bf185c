package record

import (
	"maps"
	"slices"
)

// Set holds records aggregated by stream and key: adding a value under an
// existing key adds to it, as CloudZero's sum endpoint does. Its size grows
// with distinct keys, never with the number of values added.
type Set struct {
	streams map[string]map[Key]float64
	n       int
}

// NewSet returns an empty set.
func NewSet() *Set { return &Set{streams: map[string]map[Key]float64{}} }

// Add adds v to the record of stream under key k.
func (s *Set) Add(stream string, k Key, v float64) {
	m := s.streams[stream]
	if m == nil {
		m = map[Key]float64{}
		s.streams[stream] = m
	}
	if old, ok := m[k]; ok {
		m[k] = old + v
		return
	}
	m[k] = v
	s.n++
}

// Len is the number of distinct (stream, key) records.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Merge adds every record of o into s.
func (s *Set) Merge(o *Set) {
	if o == nil {
		return
	}
	for stream, m := range o.streams {
		for k, v := range m {
			s.Add(stream, k, v)
		}
	}
}

// Streams returns the stream names in sorted order.
func (s *Set) Streams() []string {
	return slices.Sorted(maps.Keys(s.streams))
}

// Records returns the records of one stream; the caller must not modify it.
func (s *Set) Records(stream string) map[Key]float64 { return s.streams[stream] }

// RemoveNonPositive deletes every record whose value is not positive, and reports how
// many it removed: CloudZero rejects values <= 0.
func (s *Set) RemoveNonPositive() int {
	removed := 0
	for stream, m := range s.streams {
		for k, v := range m {
			if !(v > 0) {
				delete(m, k)
				removed++
			}
		}
		if len(m) == 0 {
			delete(s.streams, stream)
		}
	}
	s.n -= removed
	return removed
}

// Value returns the value stored for (stream, k).
func (s *Set) Value(stream string, k Key) (float64, bool) {
	v, ok := s.streams[stream][k]
	return v, ok
}
