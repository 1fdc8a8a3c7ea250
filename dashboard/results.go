package dashboard

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Post/Redirect/Get: an action that ran (the confirmed POST) keeps its result here and
// redirects (303) to GET /result/{key}, which shows it. Reloading that page, or coming back
// to it, shows the result again and runs nothing.

const (
	resultsKept = 256              // results a Handler keeps, the newest
	resultTTL   = 15 * time.Minute // how long a result stays viewable
)

// storedResult is the page an action's result is shown on, and whose it is: the CSRF
// cookie of the browser that ran it, so that no one else reads it.
type storedResult struct {
	owner  string
	at     time.Time
	status int
	title  string
	res    result
}

// resultStore is a Handler's recent results, bounded by count and age; safe for
// concurrent use.
type resultStore struct {
	mu    sync.Mutex
	byKey map[string]storedResult
	order []string // keys, oldest first
}

func newResultStore() *resultStore { return &resultStore{byKey: map[string]storedResult{}} }

// put keeps r at now and returns its key (random, unguessable).
func (s *resultStore) put(r storedResult, now time.Time) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	key := hex.EncodeToString(b)
	r.at = now
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropOld(now)
	for len(s.order) >= resultsKept {
		delete(s.byKey, s.order[0])
		s.order = s.order[1:]
	}
	s.byKey[key] = r
	s.order = append(s.order, key)
	return key
}

// get returns the result under key if owner ran it and it has not expired by now.
func (s *resultStore) get(key, owner string, now time.Time) (storedResult, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropOld(now)
	r, ok := s.byKey[key]
	if !ok || owner == "" || r.owner != owner {
		return storedResult{}, false
	}
	return r, true
}

// dropOld forgets the results older than resultTTL (s.mu held).
func (s *resultStore) dropOld(now time.Time) {
	n := 0
	for n < len(s.order) && now.Sub(s.byKey[s.order[n]].at) >= resultTTL {
		delete(s.byKey, s.order[n])
		n++
	}
	s.order = s.order[n:]
}

// done ends an action that ran: its result is kept and the browser is sent (303 See
// Other) to the page that shows it, so a reload or Back repeats nothing.
func (h *Handler) done(w http.ResponseWriter, r *http.Request, status int, title string, res result) {
	owner := ""
	if c, err := r.Cookie(csrfCookie); err == nil { // always there: checkPost required it
		owner = c.Value
	}
	key := h.results.put(storedResult{owner: owner, status: status, title: title, res: res}, time.Now())
	http.Redirect(w, r, h.base+"/result/"+key, http.StatusSeeOther)
}

// failed ends an action that ran and failed, as done does.
func (h *Handler) failed(w http.ResponseWriter, r *http.Request, err error, back string) {
	status, res := failure(err)
	res.Back = back
	h.done(w, r, status, "Error", res)
}

// showResult is GET /result/{key}: an action's result, with the status the action had
// (409 for a requeue conflict, 404 when nothing was found to act on).
func (h *Handler) showResult(w http.ResponseWriter, r *http.Request) {
	owner := ""
	if c, err := r.Cookie(csrfCookie); err == nil {
		owner = c.Value
	}
	sr, ok := h.results.get(r.PathValue("key"), owner, time.Now())
	if !ok {
		h.render(w, r, http.StatusNotFound, "result", "Result gone", result{Error: "This result is not here (any more): " +
			"a dashboard keeps its last results for " + strconv.Itoa(int(resultTTL.Minutes())) + " minutes, in the process that ran the action, " +
			"for the browser that ran it. The action ran once and is not repeated; the lists show what is there now."})
		return
	}
	h.render(w, r, sr.status, "result", sr.title, sr.res)
}
