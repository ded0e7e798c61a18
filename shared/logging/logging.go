// Package logging builds the process logger from configuration.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("text" or "json"). The level can be changed later
// through the returned LevelVar, for example on reload.
func New(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar, error) {
	lv := new(slog.LevelVar)
	if err := SetLevel(lv, level); err != nil {
		return nil, nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "", "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, nil, fmt.Errorf("log format %q is not one of text, json", format)
	}
	// Warnings and errors are the records that repeat under bad input
	// (accept errors, rejected peers), so they pass through a limiter.
	return slog.New(&levelSplit{limited: RateLimited(h, 20, 10*time.Second), plain: h}), lv, nil
}

// SetLevel parses level and stores it in lv.
func SetLevel(lv *slog.LevelVar, level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return fmt.Errorf("log level %q is not one of debug, info, warn, error", level)
	}
	lv.Set(l)
	return nil
}

// levelSplit sends warnings and errors through a rate limiter and writes
// other records directly.
type levelSplit struct {
	limited, plain slog.Handler
}

func (h *levelSplit) Enabled(ctx context.Context, l slog.Level) bool { return h.plain.Enabled(ctx, l) }

func (h *levelSplit) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		return h.limited.Handle(ctx, r)
	}
	return h.plain.Handle(ctx, r)
}

func (h *levelSplit) WithAttrs(as []slog.Attr) slog.Handler {
	return &levelSplit{limited: h.limited.WithAttrs(as), plain: h.plain.WithAttrs(as)}
}

func (h *levelSplit) WithGroup(name string) slog.Handler {
	return &levelSplit{limited: h.limited.WithGroup(name), plain: h.plain.WithGroup(name)}
}
