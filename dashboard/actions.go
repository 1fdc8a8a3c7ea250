package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Every action is two POSTs: the first (from a list's buttons) shows what it will do and
// asks; the second (confirm=yes, from that page) does it and redirects to its result
// (results.go), so that reloading the result repeats nothing.

// field is a hidden form field carried from the first POST to the second.
type field struct{ Name, Value string }

type confirmation struct {
	Action   string // path under the base
	Verb     string // the button's label
	Question string
	IDs      []string
	Fields   []field
	Back     string
}

type result struct {
	OK       string
	Error    string
	Conflict bool
	IDs      []string // the messages the action touched, linked
	Back     string
}

// maxSelected is how many ids one action takes: a page's worth, which is all the lists let
// a user tick.
const maxSelected = PageSizeMax

// selectedIDs are the ids of a poisoned-list form: the row button pressed ("one"), else the
// ticked boxes, each once. None, or more than maxSelected, is errBadInput.
func selectedIDs(r *http.Request, what string) ([]string, error) {
	ids := r.PostForm["id"]
	if one := r.PostFormValue("one"); one != "" {
		ids = []string{one}
	}
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	switch {
	case len(out) == 0:
		return nil, fmt.Errorf("%w: no %s selected", errBadInput, what)
	case len(out) > maxSelected:
		return nil, fmt.Errorf("%w: %d %ss selected, at most %d at a time", errBadInput, len(out), what, maxSelected)
	}
	return out, nil
}

func confirmed(r *http.Request) bool { return r.PostFormValue("confirm") == "yes" }

// parseAge reads a duration such as "90s", "36h" or "7d".
func parseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 36500 {
			return 0, fmt.Errorf("%w: duration %q", errBadInput, s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: duration %q (like 30s, 2h or 7d)", errBadInput, s)
	}
	return d, nil
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.FormatInt(n, 10) + " " + what + "s"
}

func (h *Handler) requeue(w http.ResponseWriter, r *http.Request) {
	ids, err := selectedIDs(r, "message")
	back := "/poisoned"
	if err != nil {
		h.fail(w, r, err)
		return
	}
	delay, err := parseAge(r.PostFormValue("delay"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !confirmed(r) {
		when := "due at once"
		if delay > 0 {
			when = "due in " + delay.String()
		}
		h.render(w, r, http.StatusOK, "confirm", "Confirm requeue", confirmation{Action: "/poisoned/requeue", Verb: "Requeue",
			Question: fmt.Sprintf("Requeue %s, %s, with attempts reset to 0?", plural(int64(len(ids)), "poisoned message"), when),
			IDs:      ids, Fields: []field{{"delay", r.PostFormValue("delay")}}, Back: back})
		return
	}
	n, err := h.p.RequeuePoisoned(r.Context(), ids, am.RequeueDelay(delay))
	switch {
	case errors.Is(err, am.ErrRequeueConflict):
		h.done(w, r, http.StatusConflict, "Requeue conflict", result{Conflict: true, IDs: ids, Back: back,
			Error: fmt.Sprintf("Requeued %s; the others stay poisoned: a message with the same insert id is pending again for their consumer (%v).",
				plural(int64(n), "message"), err)})
	case errors.Is(err, am.ErrMessageNotFound):
		h.done(w, r, http.StatusNotFound, "Nothing requeued", result{Back: back,
			Error: fmt.Sprintf("Nothing was requeued: %v. They were requeued, deleted or purged meanwhile; go back and select again.", err)})
	case err != nil:
		h.failed(w, r, err, back)
	default:
		h.done(w, r, http.StatusOK, "Requeued", result{OK: fmt.Sprintf("Requeued %s: back in the queue with attempts reset.", plural(int64(n), "message")), IDs: ids, Back: back})
	}
}

func (h *Handler) deletePoisoned(w http.ResponseWriter, r *http.Request) {
	ids, err := selectedIDs(r, "message")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !confirmed(r) {
		h.render(w, r, http.StatusOK, "confirm", "Confirm delete", confirmation{Action: "/poisoned/delete", Verb: "Delete",
			Question: fmt.Sprintf("Delete %s for good? This cannot be undone.", plural(int64(len(ids)), "poisoned message")),
			IDs:      ids, Back: "/poisoned"})
		return
	}
	n, err := h.p.DeletePoisoned(r.Context(), ids)
	if err != nil {
		h.failed(w, r, err, "/poisoned")
		return
	}
	done := fmt.Sprintf("Deleted %s.", plural(n, "poisoned message"))
	if gone := int64(len(ids)) - n; gone > 0 {
		done += fmt.Sprintf(" %d of the %d selected were gone already (requeued, deleted or purged meanwhile).", gone, len(ids))
	}
	h.done(w, r, http.StatusOK, "Deleted", result{OK: done, Back: "/poisoned"})
}

func (h *Handler) purge(w http.ResponseWriter, r *http.Request) {
	older, err := parseAge(r.PostFormValue("older_than"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if older <= 0 {
		h.fail(w, r, fmt.Errorf("%w: purge needs an age (older than, like 7d)", errBadInput))
		return
	}
	rail := r.PostFormValue("rail")
	f := am.MessageFilter{ConsumerType: r.PostFormValue("consumer"), PayloadType: r.PostFormValue("payload"), Rail: railFilter(rail), OlderThan: older}
	fields := []field{{"older_than", r.PostFormValue("older_than")}, {"consumer", f.ConsumerType}, {"payload", f.PayloadType}, {"rail", rail}}
	if !confirmed(r) {
		n, err := h.p.CountPoisoned(r.Context(), f)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		scope := "all consumers"
		if f.ConsumerType != "" {
			scope = "consumer " + f.ConsumerType
		}
		if f.PayloadType != "" {
			scope += ", payload " + f.PayloadType
		}
		if rail != "" {
			scope += ", rail " + rail
		}
		h.render(w, r, http.StatusOK, "confirm", "Confirm purge", confirmation{Action: "/poisoned/purge", Verb: "Purge",
			Question: fmt.Sprintf("Purge %s poisoned more than %s ago (%s)? This cannot be undone.", plural(n, "message"), older, scope),
			Fields:   fields, Back: "/poisoned"})
		return
	}
	n, err := h.p.PurgePoisoned(r.Context(), f)
	if err != nil {
		h.failed(w, r, err, "/poisoned")
		return
	}
	h.done(w, r, http.StatusOK, "Purged", result{OK: fmt.Sprintf("Purged %s poisoned more than %s ago.", plural(n, "message"), older), Back: "/poisoned"})
}

func (h *Handler) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	ids, err := selectedIDs(r, "schedule")
	if err == nil && len(ids) != 1 {
		err = fmt.Errorf("%w: one schedule at a time", errBadInput)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !confirmed(r) {
		h.render(w, r, http.StatusOK, "confirm", "Confirm delete", confirmation{Action: "/schedules/delete", Verb: "Delete schedule",
			Question: "Delete this schedule? It stops producing messages; the messages it already produced stay.",
			IDs:      ids, Back: "/schedules"})
		return
	}
	db, err := h.p.DB()
	if err != nil {
		h.failed(w, r, err, "/schedules")
		return
	}
	id := ids[0]
	if err := am.DeleteSchedule(r.Context(), db, id); err != nil {
		h.failed(w, r, err, "/schedules")
		return
	}
	h.done(w, r, http.StatusOK, "Deleted", result{OK: "Deleted schedule " + id + ".", Back: "/schedules"})
}
