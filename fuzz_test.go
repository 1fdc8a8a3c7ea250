package asyncmonolith

import (
	"context"
	"errors"
	"testing"
	"time"
)

type fuzzPayload struct {
	Name  string            `json:"name"`
	Count int               `json:"count"`
	Tags  []string          `json:"tags"`
	Meta  map[string]string `json:"meta"`
}

// FuzzPayloadDecode feeds arbitrary stored payloads to a consumer's decoding path: it
// must return ErrDecodePayload or run the consumer, never panic.
func FuzzPayloadDecode(f *testing.F) {
	for _, seed := range []string{`{}`, `{"name":"x","count":1}`, `{"count":"text"}`, `{"name":`, `null`, `[]`, "\x00", `{"tags":["a"],"meta":{"k":"v"}}`, `"` + string(rune(0xFFFD)) + `"`} {
		f.Add(seed)
	}
	p := New(Config{})
	ran := 0
	if err := Register[fuzzPayload](p, ConsumerFunc[fuzzPayload](func(ctx context.Context, m *Message[fuzzPayload]) error {
		ran++
		return nil
	}), WithName("Fuzz")); err != nil {
		f.Fatal(err)
	}
	reg, _ := p.registry.consumer("Fuzz")
	f.Fuzz(func(t *testing.T, payload string) {
		before := ran
		err := reg.run(context.Background(), envelope{row: &ConsumerMessage{ID: "1", PayloadType: "fuzzPayload", Payload: payload}, attempt: 1, maxAttempts: 1})
		switch {
		case err == nil && ran != before+1:
			t.Fatal("nil error without running the consumer")
		case err != nil && !errors.Is(err, ErrDecodePayload):
			t.Fatalf("error %v does not match ErrDecodePayload", err)
		}
	})
}

// FuzzParseCron checks expressions and zones: a typed error or a next time after from,
// never a panic.
func FuzzParseCron(f *testing.F) {
	for _, s := range [][2]string{{"0 0 12 * * MON", "Europe/London"}, {"*/5 * * * *", "UTC"}, {"@every 90s", ""}, {"@daily", "America/New_York"},
		{"61 * * * * *", "UTC"}, {"* * *", "UTC"}, {"0 0 0 30 2 *", ""}, {"0 0 12 * * MON", "Mars/Olympus"}, {"", ""}, {"@every -1s", ""}} {
		f.Add(s[0], s[1])
	}
	from := time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr, zone string) {
		next, err := ParseCron(expr, zone, from)
		if err != nil {
			if !errors.Is(err, ErrInvalidSchedule) {
				t.Fatalf("ParseCron(%q, %q): %v does not match ErrInvalidSchedule", expr, zone, err)
			}
			return
		}
		if !next.After(from) {
			t.Fatalf("ParseCron(%q, %q) = %v, not after %v", expr, zone, next, from)
		}
	})
}

// FuzzConfig validates arbitrary configurations: valid ones keep their fields in range,
// invalid ones fail with a ConfigError naming a field.
func FuzzConfig(f *testing.F) {
	f.Add(0, int64(0), int64(0), int64(0), 0, 0, int64(0), 0, 0, int64(0), int64(0))
	f.Add(-1, int64(-1), int64(5), int64(1), 10_001, -3, int64(2*time.Hour), 101, -1, int64(-1), int64(1))
	f.Add(3, int64(time.Second), int64(time.Millisecond), int64(time.Minute), 50, 4, int64(time.Minute), 2, 5, int64(time.Hour), int64(time.Minute))
	f.Fuzz(func(t *testing.T, attempts int, delay, minDelay, maxDelay int64, batch, procs int, timeout int64, sched int,
		breakerFailures int, cooldown, maxCooldown int64) {
		c := Config{MaxAttempts: attempts, AttemptDelay: time.Duration(delay), ProcessorMinDelay: time.Duration(minDelay),
			ProcessorMaxDelay: time.Duration(maxDelay), ProcessorBatchSize: batch, ConsumerProcessors: procs,
			ConsumerTimeout: time.Duration(timeout), ScheduleProcessors: sched, BreakerFailures: breakerFailures,
			BreakerCooldown: time.Duration(cooldown), BreakerMaxCooldown: time.Duration(maxCooldown)}.withDefaults()
		err := c.validate()
		if err == nil {
			if c.MaxAttempts < 1 || c.ProcessorBatchSize < 1 || c.ProcessorBatchSize > ProcessorBatchSizeMax || c.ProcessorMinDelay > c.ProcessorMaxDelay ||
				c.ConsumerProcessors < 1 || c.ConsumerTimeout <= 0 || c.ConsumerTimeout > ConsumerTimeoutMax || c.AttemptDelay < 0 ||
				c.BreakerFailures < 1 || c.BreakerCooldown < 0 || c.BreakerMaxCooldown < c.BreakerCooldown {
				t.Fatalf("accepted an invalid config: %+v", c)
			}
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field == "" || !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("error %v is not a ConfigError naming a field", err)
		}
	})
}
