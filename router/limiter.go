package router

import (
	"sync"
	"time"
)

// bucket is a token bucket: rate tokens per second, at most burst saved.
// It is not safe for concurrent use; see sharedBucket.
type bucket struct {
	rate, burst float64
	tokens      float64
	last        int64 // unix nanoseconds
}

func newBucket(rate, burst float64) bucket {
	return bucket{rate: rate, burst: burst, tokens: burst}
}

func (b *bucket) allow(now int64) bool {
	if b.last != 0 {
		b.tokens += float64(now-b.last) * b.rate / 1e9
		if b.tokens > b.burst {
			b.tokens = b.burst
		}
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

type sharedBucket struct {
	mu sync.Mutex
	b  bucket
}

func (s *sharedBucket) allow() bool {
	now := time.Now().UnixNano()
	s.mu.Lock()
	ok := s.b.allow(now)
	s.mu.Unlock()
	return ok
}
