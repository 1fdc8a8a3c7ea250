// Package browsertest drives the dashboard in headless Chromium (chromedp) against a real
// database. It is a module of its own so that the core module does not depend on a
// browser driver. The browser is $AM_CHROMIUM, else /usr/bin/chromium (Debian's chromium
// package); without one the tests skip loudly, or fail under CI=true.
package browsertest
