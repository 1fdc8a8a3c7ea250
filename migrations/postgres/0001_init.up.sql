-- asyncmonolith schema for PostgreSQL. Times are Unix milliseconds.

CREATE TABLE "consumer_messages" (
  "id" varchar(64),
  "created_at" bigint NOT NULL,
  "available_after" bigint NOT NULL,
  "attempts" bigint NOT NULL DEFAULT 0,
  "consumer_type" varchar(255) NOT NULL,
  "payload_type" varchar(255) NOT NULL,
  "payload" text NOT NULL,
  "insert_id" varchar(255) NOT NULL,
  "trace_id" varchar(32),
  "span_id" varchar(16),
  "last_error" text,
  PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "ux_consumer_messages_insert_id_consumer_type" ON "consumer_messages" ("insert_id","consumer_type");

CREATE INDEX "idx_consumer_messages_fetch" ON "consumer_messages" ("available_after","created_at","id");

CREATE TABLE "poisoned_messages" (
  "id" varchar(64),
  "created_at" bigint NOT NULL,
  "available_after" bigint NOT NULL,
  "attempts" bigint NOT NULL DEFAULT 0,
  "consumer_type" varchar(255) NOT NULL,
  "payload_type" varchar(255) NOT NULL,
  "payload" text NOT NULL,
  "insert_id" varchar(255) NOT NULL,
  "trace_id" varchar(32),
  "span_id" varchar(16),
  "last_error" text NOT NULL,
  "poisoned_at" bigint NOT NULL,
  PRIMARY KEY ("id")
);

CREATE INDEX "idx_poisoned_messages_poisoned_at" ON "poisoned_messages" ("poisoned_at");

CREATE INDEX "idx_poisoned_messages_consumer_type" ON "poisoned_messages" ("consumer_type");

CREATE TABLE "scheduled_messages" (
  "id" varchar(64),
  "tag" varchar(255),
  "available_after" bigint NOT NULL,
  "chron_expression" varchar(255) NOT NULL,
  "chron_timezone" varchar(64) NOT NULL,
  "payload_type" varchar(255) NOT NULL,
  "payload" text NOT NULL,
  PRIMARY KEY ("id")
);

CREATE INDEX "idx_scheduled_messages_available_after" ON "scheduled_messages" ("available_after");

CREATE INDEX "idx_scheduled_messages_tag" ON "scheduled_messages" ("tag");
