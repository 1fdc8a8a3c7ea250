package dashboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// page is what every template receives.
type page struct {
	Base     string
	ReadOnly bool
	CSRF     string
	Nav      string // the active section
	Title    string
	Data     any
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	p := page{Base: h.base, ReadOnly: h.readOnly, Nav: name, Title: title, Data: data}
	if !h.readOnly {
		p.CSRF = h.csrfToken(w, r)
	}
	var buf bytes.Buffer
	if err := h.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		http.Error(w, "dashboard: template: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// fail shows an error page: 404 for a missing message or schedule, 400 for bad input.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, res := failure(err)
	h.render(w, r, status, "result", "Error", res)
}

// failure is the status and result page of err.
func failure(err error) (int, result) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, am.ErrMessageNotFound), errors.Is(err, am.ErrScheduleNotFound):
		status = http.StatusNotFound
	case errors.Is(err, am.ErrInvalidOption), errors.Is(err, errBadInput):
		status = http.StatusBadRequest
	}
	return status, result{Error: err.Error()}
}

// overviewRow is one consumer's line of the overview.
type overviewRow struct {
	am.QueueStats
	PausedUntil time.Time
}

type overviewData struct {
	Base     string // links are absolute: the overview may be served at the base without its slash
	Rails    []am.RailStats
	Rows     []overviewRow
	Total    am.QueueStats
	Counters am.Counters
	At       time.Time
}

func (h *Handler) overviewData(r *http.Request) (overviewData, error) {
	stats, err := h.p.Stats(r.Context())
	if err != nil {
		return overviewData{}, err
	}
	paused := h.p.Paused()
	d := overviewData{Base: h.base, Rails: h.p.SumByRail(stats), Counters: h.p.Counters(), At: time.Now().UTC()}
	for _, s := range stats {
		d.Rows = append(d.Rows, overviewRow{QueueStats: s, PausedUntil: paused[s.ConsumerType]})
		d.Total.Pending += s.Pending
		d.Total.Running += s.Running
		d.Total.Due += s.Due
		d.Total.Poisoned += s.Poisoned
		d.Total.OldestDueAge = max(d.Total.OldestDueAge, s.OldestDueAge)
	}
	return d, nil
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	d, err := h.overviewData(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "overview", "Overview", d)
}

// overviewLive is the overview's table alone, which the page fetches every few seconds.
func (h *Handler) overviewLive(w http.ResponseWriter, r *http.Request) {
	d, err := h.overviewData(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := h.pages["overview"].ExecuteTemplate(w, "live", d); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// filter is a list page's query: the filter, the page size and the cursor.
type filter struct {
	Consumer, Payload, InsertID, Due, Tag string
	Rail                                  string // "" any rail, defaultRailParam the default one
	Limit                                 int
	After                                 string
}

// defaultRailParam is the rail query parameter's value for the default rail (whose name,
// "", means "any rail" there); it cannot name a rail of Config.Rails.
const defaultRailParam = "(default)"

// railParam is the rail query parameter's value for a rail.
func railParam(rail string) string {
	if rail == am.DefaultRail {
		return defaultRailParam
	}
	return rail
}

// railFilter is the MessageFilter.Rail of a rail query parameter's value.
func railFilter(v string) *string {
	switch v {
	case "":
		return nil
	case defaultRailParam:
		v = am.DefaultRail
	}
	return &v
}

var errBadInput = errors.New("dashboard: bad input")

func parseFilter(r *http.Request) (filter, am.MessageFilter, error) {
	q := r.URL.Query()
	f := filter{Consumer: q.Get("consumer"), Payload: q.Get("payload"), InsertID: q.Get("insert_id"),
		Due: q.Get("due"), Tag: q.Get("tag"), Rail: q.Get("rail"), After: q.Get("after"), Limit: PageSizeDefault}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > PageSizeMax {
			return f, am.MessageFilter{}, errors.Join(errBadInput, errors.New("limit: want 1 to "+strconv.Itoa(PageSizeMax)))
		}
		f.Limit = n
	}
	mf := am.MessageFilter{ConsumerType: f.Consumer, PayloadType: f.Payload, InsertID: f.InsertID, Rail: railFilter(f.Rail), Limit: f.Limit}
	switch f.Due {
	case "":
	case "yes", "no":
		due := f.Due == "yes"
		mf.Due = &due
	default:
		return f, mf, errors.Join(errBadInput, errors.New("due: want yes or no"))
	}
	return f, mf, nil
}

// Query encodes the filter (with the cursor after, if any) as a link's query string.
func (f filter) Query(after string) string {
	v := url.Values{}
	for k, s := range map[string]string{"consumer": f.Consumer, "payload": f.Payload, "insert_id": f.InsertID,
		"due": f.Due, "tag": f.Tag, "rail": f.Rail, "after": after} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if f.Limit != PageSizeDefault {
		v.Set("limit", strconv.Itoa(f.Limit))
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

type listData[T any] struct {
	Filter filter
	Rails  []railOption // the rail filter's choices
	Page   am.Page[T]
	Now    time.Time
}

// railOption is one choice of the rail filter.
type railOption struct{ Value, Label string }

// railOptions are the rails the plugin runs, and the filtered one if it is another (a
// rail found only on stored rows, reached from the overview).
func (h *Handler) railOptions(current string) []railOption {
	var out []railOption
	seen := false
	for _, name := range h.p.Rails() {
		v := railParam(name)
		seen = seen || v == current
		out = append(out, railOption{Value: v, Label: v})
	}
	if current != "" && !seen {
		out = append(out, railOption{Value: current, Label: current + " (not configured)"})
	}
	return out
}

func (h *Handler) messages(w http.ResponseWriter, r *http.Request) {
	f, mf, err := parseFilter(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	pg, err := h.p.PageMessages(r.Context(), mf, f.After)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "messages", "Messages", listData[am.ConsumerMessage]{Filter: f, Rails: h.railOptions(f.Rail), Page: pg, Now: time.Now()})
}

func (h *Handler) poisonedList(w http.ResponseWriter, r *http.Request) {
	f, mf, err := parseFilter(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	mf.Due = nil // not a poisoned message's property
	pg, err := h.p.PagePoisoned(r.Context(), mf, f.After)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "poisoned", "Poisoned", listData[am.PoisonedMessage]{Filter: f, Rails: h.railOptions(f.Rail), Page: pg, Now: time.Now()})
}

// detail is a message (pending or poisoned) on its own page.
type detail struct {
	Poisoned bool
	Message  am.ConsumerMessage
	Pretty   string // the payload, indented when it is JSON
	Error    string
	At       int64 // poisoned at
}

func pretty(payload string) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(payload), "", "  "); err != nil {
		return payload
	}
	return buf.String()
}

func (h *Handler) message(w http.ResponseWriter, r *http.Request) {
	m, err := h.p.GetMessage(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := detail{Message: m, Pretty: pretty(m.Payload), Error: deref(m.LastError)}
	h.render(w, r, http.StatusOK, "detail", "Message "+m.ID, d)
}

func (h *Handler) poisonedOne(w http.ResponseWriter, r *http.Request) {
	m, err := h.p.GetPoisoned(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := detail{Poisoned: true, Pretty: pretty(m.Payload), Error: m.LastError, At: m.PoisonedAt,
		Message: am.ConsumerMessage{ID: m.ID, CreatedAt: m.CreatedAt, AvailableAfter: m.AvailableAfter, Attempts: m.Attempts,
			ConsumerType: m.ConsumerType, PayloadType: m.PayloadType, Payload: m.Payload, InsertID: m.InsertID,
			TraceID: m.TraceID, SpanID: m.SpanID, Rail: m.Rail}}
	h.render(w, r, http.StatusOK, "detail", "Poisoned message "+m.ID, d)
}

// scheduleRow is a schedule with its next run in its own zone.
type scheduleRow struct {
	am.ScheduleInfo
	NextInZone string
}

func (h *Handler) schedules(w http.ResponseWriter, r *http.Request) {
	f, _, err := parseFilter(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	pg, err := h.p.PageSchedules(r.Context(), am.ScheduleFilter{Tag: f.Tag, Limit: f.Limit}, f.After)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := listData[scheduleRow]{Filter: f, Page: am.Page[scheduleRow]{Next: pg.Next}, Now: time.Now()}
	for _, s := range pg.Rows {
		row := scheduleRow{ScheduleInfo: s, NextInZone: s.NextRun.Format(timeLayout) + " (zone unknown)"}
		if loc, err := h.zones.location(s.ChronTimezone); err == nil {
			row.NextInZone = s.NextRun.In(loc).Format("2006-01-02 15:04:05 MST")
		}
		out.Page.Rows = append(out.Page.Rows, row)
	}
	h.render(w, r, http.StatusOK, "schedules", "Schedules", out)
}

const timeLayout = "2006-01-02 15:04:05 UTC"

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// msTime formats Unix milliseconds in UTC.
func msTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(timeLayout) }

// age says how long ago (or, negative, how far ahead) Unix milliseconds ms is from now.
func age(now time.Time, ms int64) string {
	d := now.Sub(time.UnixMilli(ms)).Round(time.Second)
	if d < 0 {
		return "in " + (-d).String()
	}
	return d.String() + " ago"
}

// dur rounds a wait for reading: to the second, or to the millisecond under a second.
func dur(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
