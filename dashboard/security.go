package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// The dashboard's defences: a Content-Security-Policy without inline script or style (so
// an escaped payload could not run even if escaping failed), no framing, no sniffing; and
// for every POST a same-origin check (http.CrossOriginProtection: Sec-Fetch-Site, else
// Origin against Host; browsers set them and pages cannot forge them) plus a double-submit CSRF token bound to the handler's random key.

const csrfCookie = "am_dashboard_csrf"

// errForbidden is why a POST was refused (cross-site, or without a valid token): the
// text of the 403 response, which is all a client receives.
var errForbidden = errors.New("dashboard: cross-site or unauthenticated request refused")

func setSecurityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// csrfToken returns the token forms carry, setting the browser's cookie when it has none.
func (h *Handler) csrfToken(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) != 64 {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		c = &http.Cookie{Name: csrfCookie, Value: hex.EncodeToString(b), Path: h.base + "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil}
		http.SetCookie(w, c)
	}
	return h.sign(c.Value)
}

func (h *Handler) sign(cookie string) string {
	m := hmac.New(sha256.New, h.csrfKey)
	m.Write([]byte(cookie))
	return hex.EncodeToString(m.Sum(nil))
}

// checkPost refuses a state-changing request that is cross-site or lacks the token.
func (h *Handler) checkPost(r *http.Request) error {
	// Sec-Fetch-Site when the browser sends it, else Origin against Host: a same-origin
	// request through a proxy that rewrites Host is still same-origin by Sec-Fetch-Site.
	if err := h.origin.Check(r); err != nil {
		return fmt.Errorf("%w: %w", errForbidden, err)
	}
	c, err := r.Cookie(csrfCookie)
	if err != nil {
		return errForbidden
	}
	if !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(h.sign(c.Value))) {
		return fmt.Errorf("%w: the form's token is not this dashboard's (reload the page; behind a load balancer, give every instance the same CSRFKey)", errForbidden)
	}
	return nil
}

// checkText refuses a request whose path, query or form holds a NUL byte or invalid UTF-8
// with errBadInput (400): no browser form can carry such a value back, PostgreSQL refuses
// it in a query (which would surface as a 500), and no id the dashboard links to holds one.
func checkText(r *http.Request) error {
	bad := func(s string) bool { return !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 }
	if bad(r.URL.Path) {
		return fmt.Errorf("%w: the path holds a NUL byte or invalid UTF-8", errBadInput)
	}
	for _, vals := range []url.Values{r.URL.Query(), r.PostForm} {
		for k, vs := range vals {
			for _, v := range vs {
				if bad(k) || bad(v) {
					return fmt.Errorf("%w: %q holds a NUL byte or invalid UTF-8", errBadInput, k)
				}
			}
		}
	}
	return nil
}
