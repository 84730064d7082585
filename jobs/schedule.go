package jobs

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Schedule computes the occurrences of a job. Next returns the first
// occurrence strictly after t, or the zero time when there is none within
// five years.
type Schedule interface {
	Next(t time.Time) time.Time
	String() string
}

// ParseSchedule parses a cron expression of 5 fields (minute hour
// day-of-month month day-of-week) or 6 fields (with seconds first), a
// descriptor (@yearly, @annually, @monthly, @weekly, @daily, @midnight,
// @hourly) or "@every DURATION" (at least 1s). Cron expressions are read in
// loc; a nil loc means UTC. @every is aligned to the Unix epoch, so every
// leader computes the same occurrences.
func ParseSchedule(spec string, loc *time.Location) (Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := strings.TrimSpace(spec)
	if strings.HasPrefix(s, "@every") {
		d, err := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(s, "@every")))
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %w: %w", spec, ErrBadSchedule, err)
		}
		if d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("schedule %q: %w: @every needs whole seconds, at least 1s", spec, ErrBadSchedule)
		}
		return every{d: d}, nil
	}
	switch s {
	case "@yearly", "@annually":
		s = "0 0 1 1 *"
	case "@monthly":
		s = "0 0 1 * *"
	case "@weekly":
		s = "0 0 * * 0"
	case "@daily", "@midnight":
		s = "0 0 * * *"
	case "@hourly":
		s = "0 * * * *"
	}
	f := strings.Fields(s)
	switch len(f) {
	case 5:
		f = append([]string{"0"}, f...)
	case 6:
	default:
		return nil, fmt.Errorf("schedule %q: %w: want 5 or 6 fields, a @descriptor or @every DURATION", spec, ErrBadSchedule)
	}
	c := &cron{spec: spec, loc: loc}
	var err error
	type field struct {
		dst      *uint64
		star     *bool
		min, max int
		names    []string
		what     string
	}
	var secStar, minStar, monStar bool
	for i, fl := range []field{
		{&c.sec, &secStar, 0, 59, nil, "second"},
		{&c.min, &minStar, 0, 59, nil, "minute"},
		{&c.hour, &c.hourStar, 0, 23, nil, "hour"},
		{&c.dom, &c.domStar, 1, 31, nil, "day of month"},
		{&c.month, &monStar, 1, 12, monthNames, "month"},
		{&c.dow, &c.dowStar, 0, 7, dowNames, "day of week"},
	} {
		if *fl.dst, *fl.star, err = parseField(f[i], fl.min, fl.max, fl.names); err != nil {
			return nil, fmt.Errorf("schedule %q: %s field %q: %w: %w", spec, fl.what, f[i], ErrBadSchedule, err)
		}
	}
	if c.dow&(1<<7) != 0 { // 7 is Sunday too
		c.dow = c.dow&^(1<<7) | 1
	}
	return c, nil
}

var (
	monthNames = []string{"", "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	dowNames   = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
)

// parseField parses a comma list of *, ?, N, N-M, with optional /STEP.
func parseField(s string, lo, hi int, names []string) (set uint64, star bool, err error) {
	if s == "" {
		return 0, false, fmt.Errorf("empty")
	}
	star = s == "*" || s == "?"
	for _, part := range strings.Split(s, ",") {
		rng, stepS, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			if step, err = strconv.Atoi(stepS); err != nil || step < 1 || step > hi {
				return 0, false, fmt.Errorf("step %q: want 1..%d", stepS, hi)
			}
		}
		a, b := lo, hi
		switch {
		case rng == "*" || rng == "?":
		default:
			as, bs, isRange := strings.Cut(rng, "-")
			if a, err = fieldValue(as, lo, hi, names); err != nil {
				return 0, false, err
			}
			b = a
			if isRange {
				if b, err = fieldValue(bs, lo, hi, names); err != nil {
					return 0, false, err
				}
			} else if hasStep {
				b = hi
			}
			if b < a {
				return 0, false, fmt.Errorf("range %q runs backwards", rng)
			}
		}
		for v := a; v <= b; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, star, nil
}

func fieldValue(s string, lo, hi int, names []string) (int, error) {
	for i, n := range names {
		if n != "" && strings.EqualFold(s, n) {
			return i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("value %q: want %d..%d", s, lo, hi)
	}
	return v, nil
}

// every is @every D, aligned to the Unix epoch.
type every struct{ d time.Duration }

func (e every) Next(t time.Time) time.Time {
	n := t.UnixNano()
	d := int64(e.d)
	next := (n/d + 1) * d
	if n < 0 && n%d != 0 {
		next = (n / d) * d
	}
	return time.Unix(0, next).UTC()
}

func (e every) String() string { return "@every " + e.d.String() }

// cron is a parsed cron expression evaluated on the wall clock of loc.
//
// DST: a wall-clock time that does not exist (spring forward) fires at the
// transition; a wall-clock time that exists twice (fall back) fires once,
// at its first instant, unless the hour field is "*": then the job follows
// elapsed time and fires in both passes, as Vixie cron does.
type cron struct {
	spec                       string
	loc                        *time.Location
	sec, min, hour, dom, month uint64
	dow                        uint64
	hourStar, domStar, dowStar bool
}

func (c *cron) String() string { return c.spec }

func has(set uint64, v int) bool { return set&(1<<uint(v)) != 0 }

// Next returns the first occurrence strictly after t.
func (c *cron) Next(t time.Time) time.Time {
	t = t.In(c.loc)
	// Occurrences are wall-clock (civil) times; a civil time may map to an
	// instant before its civil predecessor's second instant, so the search
	// starts early enough and keeps the smallest instant after t.
	lo, hi := c.offsetRange(t)
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	civil := time.Date(y, mo, d, h, mi, s, 0, time.UTC).Add(-time.Duration(hi-lo) * time.Second)
	var best time.Time
	limit := civil.AddDate(5, 0, 0)
	for civil = civil.Add(time.Second); civil.Before(limit); civil = civil.Add(time.Second) {
		civil = c.nextCivil(civil, limit)
		if civil.IsZero() {
			break
		}
		// The earliest instant this civil time can be is civil - maxOffset.
		_, maxOff := c.offsetRange(civil)
		if !best.IsZero() && civil.Add(-time.Duration(maxOff)*time.Second).After(best) {
			break
		}
		for _, in := range c.instants(civil) {
			if in.After(t) && (best.IsZero() || in.Before(best)) {
				best = in
			}
		}
	}
	if best.IsZero() {
		return best
	}
	return best.In(c.loc)
}

// offsetRange returns the smallest and largest UTC offset (seconds) of loc
// within a day either side of u.
func (c *cron) offsetRange(u time.Time) (lo, hi int) {
	lo, hi = 1<<30, -(1 << 30)
	for _, d := range []time.Duration{-26 * time.Hour, 0, 26 * time.Hour} {
		_, off := u.Add(d).In(c.loc).Zone()
		lo, hi = min(lo, off), max(hi, off)
	}
	return lo, hi
}

// instants maps a civil time (carried as a UTC time) to the instants it
// fires at: one normally, the transition for a skipped time, the first of
// two for a repeated time (both when the hour field is "*").
func (c *cron) instants(civil time.Time) []time.Time {
	var offs []int
	for _, d := range []time.Duration{-26 * time.Hour, 0, 26 * time.Hour} {
		_, off := civil.Add(d).In(c.loc).Zone()
		if len(offs) == 0 || offs[len(offs)-1] != off {
			offs = append(offs, off)
		}
	}
	var out []time.Time
	for _, off := range offs {
		in := civil.Add(-time.Duration(off) * time.Second)
		l := in.In(c.loc)
		if sameCivil(l, civil) && (len(out) == 0 || !out[len(out)-1].Equal(in)) {
			out = append(out, in)
		}
	}
	if len(out) == 0 { // skipped by a forward transition: fire at the transition
		_, hi := c.offsetRange(civil)
		earliest := civil.Add(-time.Duration(hi) * time.Second).In(c.loc)
		_, end := earliest.ZoneBounds()
		if end.IsZero() || end.Before(earliest) {
			return nil
		}
		return []time.Time{end}
	}
	if len(out) > 1 {
		if out[1].Before(out[0]) {
			out[0], out[1] = out[1], out[0]
		}
		if !c.hourStar {
			out = out[:1]
		}
	}
	return out
}

func sameCivil(l, civil time.Time) bool {
	y, m, d := l.Date()
	h, mi, s := l.Clock()
	cy, cm, cd := civil.Date()
	ch, cmi, cs := civil.Clock()
	return y == cy && m == cm && d == cd && h == ch && mi == cmi && s == cs
}

// nextCivil returns the first civil time >= t (UTC-carried, no DST) that
// matches the fields, or zero when none before limit.
func (c *cron) nextCivil(t, limit time.Time) time.Time {
	for t.Before(limit) {
		if !has(c.month, int(t.Month())) {
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !c.dayMatches(t) {
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !has(c.hour, t.Hour()) {
			t = t.Truncate(time.Hour).Add(time.Hour)
			continue
		}
		if !has(c.min, t.Minute()) {
			t = t.Truncate(time.Minute).Add(time.Minute)
			continue
		}
		if !has(c.sec, t.Second()) {
			// Jump to the next set second within the minute, if any.
			rest := c.sec >> uint(t.Second()+1)
			if rest == 0 {
				t = t.Truncate(time.Minute).Add(time.Minute)
				continue
			}
			t = t.Add(time.Duration(bits.TrailingZeros64(rest)+1) * time.Second)
			continue
		}
		return t
	}
	return time.Time{}
}

// dayMatches applies cron's rule: when both day fields are restricted, a
// day matching either runs.
func (c *cron) dayMatches(t time.Time) bool {
	dom := has(c.dom, t.Day())
	dow := has(c.dow, int(t.Weekday()))
	switch {
	case c.domStar && c.dowStar:
		return true
	case c.domStar:
		return dow
	case c.dowStar:
		return dom
	default:
		return dom || dow
	}
}
