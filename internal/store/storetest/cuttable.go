package storetest

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// Cuttable is a TCP proxy in front of the PostgreSQL server of a DSN, whose
// connections a test can lose in the middle of a query, as a network
// partition, a failover or a crashed backend loses them: no answer, just
// the end of the connection.
type Cuttable struct {
	// DSN names the same database and schema as the DSN given, through
	// the proxy.
	DSN string
	ln  net.Listener
	// cut is set while every connection is closed as soon as the client
	// sends anything: the client has written its query and reads EOF.
	cut   atomic.Bool
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// CuttablePostgres starts a Cuttable in front of dsn's server, stopped
// when the test ends.
func CuttablePostgres(t testing.TB, dsn string) *Cuttable {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Host = ln.Addr().String()
	c := &Cuttable{DSN: u.String(), ln: ln, conns: map[net.Conn]struct{}{}}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			c.track(client, server)
			c.wg.Add(2)
			go func() { defer c.wg.Done(); c.pipe(client, server, true) }()
			go func() { defer c.wg.Done(); c.pipe(server, client, false) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		c.mu.Lock()
		for conn := range c.conns {
			conn.Close()
		}
		c.mu.Unlock()
		c.wg.Wait()
	})
	return c
}

// Cut makes every connection, open or new, end as soon as its client
// sends anything (when on), or forward again (when off).
func (c *Cuttable) Cut(on bool) { c.cut.Store(on) }

func (c *Cuttable) track(conns ...net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range conns {
		c.conns[conn] = struct{}{}
	}
}

// pipe copies from src to dst until either ends; from the client (fromClient),
// a read while cut closes both ends without forwarding what was read.
func (c *Cuttable) pipe(src, dst net.Conn, fromClient bool) {
	defer func() {
		src.Close()
		dst.Close()
		c.mu.Lock()
		delete(c.conns, src)
		delete(c.conns, dst)
		c.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromClient && c.cut.Load() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // the end of this side, or the other side closed it
			return
		}
	}
}
