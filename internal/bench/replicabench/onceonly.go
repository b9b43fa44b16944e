package replicabench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/outpost-auth/outpost/internal/apiclient"
	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/auditcheck"
	"github.com/outpost-auth/outpost/internal/bench/onlinebench"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store"
)

// Check is the once-only guarantee checked at the end of a run, from the
// client (a race and a replay over every replica) and from the database
// (the audit log and the tokens' counters, over every run so far).
type Check struct {
	// Raced is how many users had a fresh code sent to every replica at
	// once; RaceViolations how many of those codes were not accepted by
	// exactly one replica. RaceOdd counts the losers' answers that were
	// not 401 (replayed or invalid_code): no violation, but reported.
	Raced          int `json:"raced"`
	RaceViolations int `json:"race_violations"`
	RaceOdd        int `json:"race_odd_answers"`
	// Replayed is how many times a code the race accepted was sent again
	// (once to each replica); ReplayAccepted how many of those were
	// accepted (must be 0).
	Replayed       int `json:"replayed"`
	ReplayAccepted int `json:"replay_accepted"`
	// ClientAccepted is the 200 answers the client saw in all runs so far;
	// Audited the audit log's verify.ok entries. They must be equal when
	// every request got an answer (ClientExact), since every acceptance
	// writes exactly one entry; else the client may have missed answers.
	ClientAccepted int64 `json:"client_accepted"`
	ClientExact    bool  `json:"client_exact"`
	Audited        int64 `json:"audited"`
	// Duplicates is how many verify.ok entries name a (user, token,
	// counter) an earlier entry named; CounterMismatches how many tokens'
	// last used counter is not the highest counter their entries accepted.
	Duplicates        int `json:"duplicates"`
	CounterMismatches int `json:"counter_mismatches"`
	// Chain is the audit chain check (auditcheck.VerifyStore, as
	// `outpost audit verify` runs it) of the whole log.
	Chain audit.Report `json:"chain"`
	// Problems describes the first violations found.
	Problems []string `json:"problems,omitempty"`
}

// maxProblems bounds Check.Problems.
const maxProblems = 20

func (c *Check) problem(format string, args ...any) {
	if len(c.Problems) < maxProblems {
		c.Problems = append(c.Problems, fmt.Sprintf(format, args...))
	}
}

// Clean reports whether the check ran and found no violation.
func (c Check) Clean() bool {
	return c.Raced > 0 && c.Replayed > 0 && c.RaceViolations == 0 && c.ReplayAccepted == 0 &&
		c.Duplicates == 0 && c.CounterMismatches == 0 && c.Chain.OK &&
		(!c.ClientExact || c.ClientAccepted == c.Audited)
}

// race sends, for each of users, its next code to every replica at once
// and counts the replicas that accept it; then it sends the same code to
// every replica again, none of which may accept it, and clears the user's
// failures through the admin API (the losers' and the replays' failures
// would otherwise delay the user's next run). It returns the 200s seen.
func race(ctx context.Context, d *onlinebench.Driver, users []onlinebench.User, urls []string, admin *apiclient.Client, c *Check) (int64, error) {
	var accepted int64
	for i := range users {
		u := &users[i]
		code := u.Next(d.Params)
		statuses := fireAll(ctx, d, urls, u.ID, code)
		won := 0
		for _, s := range statuses {
			switch s {
			case http.StatusOK:
				won++
			case http.StatusUnauthorized:
			default:
				c.RaceOdd++
				c.problem("race for %s counter %d: a replica answered %d (not 401)", u.ID, u.Counter, s)
			}
		}
		c.Raced++
		accepted += int64(won)
		if won != 1 {
			c.RaceViolations++
			c.problem("race for %s counter %d: %d of %d replicas accepted the code (answers %v)", u.ID, u.Counter, won, len(urls), statuses)
		}
		for j, s := range fireAll(ctx, d, urls, u.ID, code) {
			c.Replayed++
			if s == http.StatusOK {
				accepted++
				c.ReplayAccepted++
				c.problem("replay for %s counter %d: replica %d accepted a code already used", u.ID, u.Counter, j+1)
			}
		}
		if err := admin.Do(ctx, "DELETE", "/v1/users/"+u.ID+"/lockout", nil, nil); err != nil {
			return accepted, fmt.Errorf("clearing %s's failures after the race: %w", u.ID, err)
		}
	}
	return accepted, nil
}

// fireAll sends user's code to every url at the same moment (the requests
// wait for one signal) and returns the answers' statuses, 0 for a failed
// request.
func fireAll(ctx context.Context, d *onlinebench.Driver, urls []string, user, code string) []int {
	statuses := make([]int, len(urls))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, url := range urls {
		wg.Go(func() {
			<-start
			statuses[i], _, _ = d.Post(ctx, url, user, code)
		})
	}
	close(start)
	wg.Wait()
	return statuses
}

// checkStore reads the whole audit log and every user's token: no
// (user, token, counter) accepted twice, each token's last used counter the
// highest its entries accepted, and the chain intact.
func checkStore(ctx context.Context, st store.Store, users []onlinebench.User, c *Check) error {
	type key struct {
		user, token string
		matched     int64
	}
	type tokenKey struct{ user, token string }
	seen := map[key]uint64{}
	highest := map[tokenKey]int64{}
	var after uint64
	for {
		es, err := st.ListAudit(ctx, after, store.MaxListLimit)
		if err != nil {
			return fmt.Errorf("reading the audit log: %w", err)
		}
		if len(es) == 0 {
			break
		}
		after = es[len(es)-1].Seq
		for _, e := range es {
			if e.Kind != audit.VerifyOK {
				continue
			}
			c.Audited++
			var data struct {
				Token   string `json:"token"`
				Matched *int64 `json:"matched"`
			}
			if err := json.Unmarshal(e.Data, &data); err != nil || data.Matched == nil {
				return fmt.Errorf("audit entry %d (verify.ok) does not name its token and counter: %s", e.Seq, e.Data)
			}
			k := key{e.Subject, data.Token, *data.Matched}
			if first, dup := seen[k]; dup {
				c.Duplicates++
				c.problem("audit entries %d and %d both accept counter %d of %s's token %s", first, e.Seq, k.matched, k.user, k.token)
				continue
			}
			seen[k] = e.Seq
			tk := tokenKey{e.Subject, data.Token}
			if h, ok := highest[tk]; !ok || k.matched > h {
				highest[tk] = k.matched
			}
		}
	}
	for _, u := range users {
		_, toks, err := st.GetUserTokens(ctx, server.DefaultRealm, u.ID)
		if err != nil {
			return fmt.Errorf("reading %s's tokens: %w", u.ID, err)
		}
		for _, t := range toks {
			h, accepted := highest[tokenKey{u.ID, t.ID}]
			if t.Used != accepted || (accepted && t.LastUsed != h) {
				c.CounterMismatches++
				c.problem("%s's token %s: last used counter %d (used %v), highest accepted in the audit log %d (any: %v)", u.ID, t.ID, t.LastUsed, t.Used, h, accepted)
			}
		}
	}
	rep, err := auditcheck.VerifyStore(ctx, st)
	if err != nil {
		return fmt.Errorf("checking the audit chain: %w", err)
	}
	c.Chain = rep
	if !rep.OK {
		c.problem("audit chain: %s", rep.Problem)
	}
	return nil
}
