-- Snoozes: a consumer can ask for its message to run again later without using an attempt
-- (asyncmonolith.SnoozeFor); the count bounds how often (Config.MaxSnoozes). Existing rows
-- start at 0.

ALTER TABLE "consumer_messages" ADD COLUMN "snoozes" bigint NOT NULL DEFAULT 0;
