// Package dashboard is a web dashboard for an asyncmonolith queue: an http.Handler that an
// application mounts on its own mux to see pending, poisoned and scheduled messages and to
// requeue, delete or purge them.
//
//	mux.Handle("/asyncmonolith/", dashboard.New(plugin, dashboard.BasePath("/asyncmonolith")))
//
// It is built on the standard library only (html/template, embedded assets). Every action is
// a POST that needs a CSRF token and a same-origin request, and a confirmation step; once
// done, it redirects to a page that shows its result, which a reload does not repeat.
// ReadOnly hides the actions and refuses them with 403. It is an admin surface: put it
// behind the application's authentication.
package dashboard

import (
	"crypto/rand"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// PageSizeDefault is how many rows a list shows per page unless ?limit= says otherwise
// (at most PageSizeMax).
const (
	PageSizeDefault = 50
	PageSizeMax     = 500
)

// Option configures New.
type Option func(*Handler)

// ReadOnly hides every action and refuses POST requests with 403 Forbidden.
func ReadOnly() Option { return func(h *Handler) { h.readOnly = true } }

// BasePath is the prefix the handler is mounted under ("/asyncmonolith"), used in links
// and stripped from request paths that start with it; a request whose path does not (the
// application stripped it already, with http.StripPrefix) is served as it is. The default
// is "" (mounted at the root).
func BasePath(path string) Option {
	return func(h *Handler) {
		h.base = strings.TrimRight(path, "/")
		if h.base != "" && h.base[0] != '/' {
			h.base = "/" + h.base
		}
	}
}

// CSRFKey sets the key that signs the forms' CSRF tokens (at least 32 random bytes, kept
// secret). By default each Handler draws its own at random, so a form works only against
// the process that rendered it: give every instance behind a load balancer the same key,
// or a POST that lands on another instance (or on this one after a restart) is refused.
func CSRFKey(key []byte) Option {
	return func(h *Handler) { h.csrfKey = append([]byte(nil), key...) }
}

// Handler serves the dashboard of one plugin. Build it with New.
type Handler struct {
	p        *am.Plugin
	base     string
	readOnly bool
	csrfKey  []byte
	origin   *http.CrossOriginProtection
	pages    map[string]*template.Template
	results  *resultStore
	zones    *zoneCache
	mux      http.Handler
}

// New returns the dashboard of p (a plugin registered on a *gorm.DB with db.Use; it need
// not be started).
func New(p *am.Plugin, opts ...Option) *Handler {
	h := &Handler{p: p, csrfKey: make([]byte, 32), origin: http.NewCrossOriginProtection(), pages: pages, results: newResultStore(),
		zones: newZoneCache(time.LoadLocation)}
	_, _ = rand.Read(h.csrfKey) // crypto/rand.Read never fails (Go 1.24+)
	for _, o := range opts {
		o(h)
	}
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", filesOnly(static)))
	mux.HandleFunc("GET /static", http.NotFound) // not the mux's redirect to "/static/", outside the base
	mux.HandleFunc("GET /{$}", h.overview)
	mux.HandleFunc("GET /overview/live", h.overviewLive)
	mux.HandleFunc("GET /messages", h.messages)
	mux.HandleFunc("GET /messages/{id}", h.message)
	mux.HandleFunc("GET /poisoned", h.poisonedList)
	mux.HandleFunc("GET /poisoned/{id}", h.poisonedOne)
	mux.HandleFunc("GET /schedules", h.schedules)
	mux.HandleFunc("GET /result/{key}", h.showResult)
	mux.HandleFunc("POST /poisoned/requeue", h.requeue)
	mux.HandleFunc("POST /poisoned/delete", h.deletePoisoned)
	mux.HandleFunc("POST /poisoned/purge", h.purge)
	mux.HandleFunc("POST /schedules/delete", h.deleteSchedule)
	h.mux = mux
	return h
}

// ServeHTTP serves a page or an action, with the security headers on every response.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w)
	r, clean := h.route(r)
	if clean != "" {
		// The mux would redirect to a path without the base: redirect within it.
		u := url.URL{Path: h.base + clean, RawQuery: r.URL.RawQuery}
		http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if h.readOnly {
			http.Error(w, "read-only dashboard: actions are disabled", http.StatusForbidden)
			return
		}
		if err := r.ParseForm(); err != nil {
			// Too many fields (net/url's limit) or too large a body: say so, rather than
			// report the token as missing.
			h.fail(w, r, fmt.Errorf("%w: form: %w", errBadInput, err))
			return
		}
		if err := h.checkPost(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	}
	if err := checkText(r); err != nil {
		h.fail(w, r, err)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// filesOnly serves the files of fsys, and 404 for a directory (http.FileServerFS would list it).
func filesOnly(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path
		if st, err := fs.Stat(fsys, name); name == "" || strings.HasSuffix(name, "/") || err != nil || st.IsDir() {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}

// route returns r with the base path stripped (when r's path starts with it, as a whole
// segment), or, when that path is not clean ("/am//messages", "/am/./x"), the clean path
// under the base to redirect to.
func (h *Handler) route(r *http.Request) (*http.Request, string) {
	p, raw := r.URL.Path, r.URL.RawPath
	if h.base != "" {
		if rest, ok := strings.CutPrefix(p, h.base); ok && (rest == "" || rest[0] == '/') {
			p, raw = rest, ""
			if rest, ok := strings.CutPrefix(r.URL.RawPath, h.base); ok {
				raw = rest
			}
		}
	}
	if !strings.HasPrefix(p, "/") {
		// Stripped with its slash (http.StripPrefix("/am/", …), or "/am" itself): the
		// same page as with the slash (links are absolute), not a redirect, which would
		// come back here.
		p = "/" + p
		if raw != "" {
			raw = "/" + raw
		}
	}
	if p != r.URL.Path || raw != r.URL.RawPath {
		r2 := new(http.Request)
		*r2 = *r
		r2.URL = new(url.URL)
		*r2.URL = *r.URL
		r2.URL.Path, r2.URL.RawPath = p, raw
		r = r2
	}
	escaped := r.URL.EscapedPath()
	if c := cleanPath(escaped); c != escaped {
		return r, c
	}
	return r, ""
}

// cleanPath is path.Clean keeping a trailing slash, as http.ServeMux cleans a path (on its
// escaped form, so an id holding an encoded "/../" stays as it is).
func cleanPath(p string) string {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// pages are the parsed templates, one set per page (each with the shared layout). They
// are read-only after init.
var pages = func() map[string]*template.Template {
	funcs := template.FuncMap{"deref": deref, "ms": msTime, "age": age, "join": strings.Join, "dur": dur, "pathesc": url.PathEscape, "rail": railParam}
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	out := map[string]*template.Template{}
	names, _ := fs.Glob(templateFS, "templates/*.html")
	for _, name := range names {
		base := strings.TrimPrefix(name, "templates/")
		if base == "layout.html" {
			continue
		}
		out[strings.TrimSuffix(base, ".html")] = template.Must(template.Must(layout.Clone()).ParseFS(templateFS, name))
	}
	return out
}()
