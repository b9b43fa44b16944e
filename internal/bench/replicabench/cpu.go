package replicabench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat's CPU times
// (100 on every architecture Go supports on Linux).
const clockTicks = 100

// procCPU returns the user and system CPU time pid has used so far, and
// its command name, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, string, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses, so
	// the fields start after the last ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return 0, "", false
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 13 { // utime and stime are fields 14 and 15 of the line, 12 and 13 after comm
		return 0, "", false
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, "", false
	}
	return time.Duration(ut+st) * time.Second / clockTicks, string(b[open+1 : end]), true
}

// cpuSample is the CPU time used so far by the replicas, by each process
// of the PostgreSQL server (every process named "postgres" on this
// machine: backends, WAL writer, checkpointer), and by this process (the
// load generator).
type cpuSample struct {
	replicas time.Duration
	postgres map[int]time.Duration
	client   time.Duration
}

func sampleCPU(rs []*replica) cpuSample {
	s := cpuSample{postgres: map[int]time.Duration{}}
	for _, r := range rs {
		t, _, _ := procCPU(r.cmd.Process.Pid)
		s.replicas += t
	}
	s.client, _, _ = procCPU(os.Getpid())
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if t, comm, ok := procCPU(pid); ok && comm == "postgres" {
			s.postgres[pid] = t
		}
	}
	return s
}

// cpuUsed is the CPU time each group used between two samples. A
// PostgreSQL process that started in between (a replica's new connection)
// counts from zero; one that ended in between is lost.
func cpuUsed(before, after cpuSample) (replicas, postgres, client time.Duration, pgSeen bool) {
	for pid, t := range after.postgres {
		postgres += t - before.postgres[pid]
	}
	return after.replicas - before.replicas, postgres, after.client - before.client, len(after.postgres) > 0
}

// pgStats are PostgreSQL's cumulative counters a run's work shows in.
type pgStats struct {
	// commits and rollbacks are pg_stat_database's xact_commit and
	// xact_rollback of the database conn is connected to: every client's
	// transactions, the implicit one of each read statement included.
	commits, rollbacks int64
	// walSyncs and walBytes are pg_stat_wal's wal_sync and wal_bytes: the
	// WAL flushes to disk and bytes written, of the whole server.
	walSyncs, walBytes int64
}

// readPGStats reads the counters. A backend reports its statistics late
// (harness.pgStats waits for the benchmark's to exit first).
func readPGStats(ctx context.Context, conn *pgx.Conn) (pgStats, error) {
	var s pgStats
	err := conn.QueryRow(ctx, `SELECT d.xact_commit, d.xact_rollback, w.wal_sync, w.wal_bytes::bigint
		FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()`).Scan(&s.commits, &s.rollbacks, &s.walSyncs, &s.walBytes)
	if err != nil {
		return s, fmt.Errorf("reading pg_stat_database and pg_stat_wal (PostgreSQL 14 or later): %w", err)
	}
	return s, nil
}
