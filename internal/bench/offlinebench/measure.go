package offlinebench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-auth/outpost/internal/cost"
	"golang.org/x/crypto/argon2"
)

// rawKDF runs n argon2id evaluations on workers goroutines: the baseline.
func rawKDF(kdf cost.KDF, n, workers int) {
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range max(1, min(workers, n)) {
		wg.Go(func() {
			var salt [32]byte
			for i := range jobs {
				binary.BigEndian.PutUint64(salt[:], uint64(i))
				argon2.IDKey([]byte("12345678"), salt[:], kdf.Time, kdf.MemoryKiB, kdf.Threads, 32)
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

func timeIt(f func() error) (float64, error) {
	start := time.Now()
	err := f()
	return time.Since(start).Seconds(), err
}

// median of xs (xs is not modified).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// overhead is a/b − 1, or 0 when b is too small to measure.
func overhead(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a/b - 1
}

// peakRSSKiB reads this process's peak resident set (Linux VmHWM), or 0.
func peakRSSKiB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// cpuSeconds returns this process's user + system CPU time from
// /proc/self/stat (Linux; clock ticks of 1/100 s), or 0 elsewhere.
func cpuSeconds() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	// After "pid (comm)": state is f[0], utime f[11], stime f[12].
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}
