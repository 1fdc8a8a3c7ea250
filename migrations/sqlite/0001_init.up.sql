-- asyncmonolith schema for SQLite. Times are Unix milliseconds.

CREATE TABLE `consumer_messages` (
  `id` text,
  `created_at` integer NOT NULL,
  `available_after` integer NOT NULL,
  `attempts` integer NOT NULL DEFAULT 0,
  `consumer_type` text NOT NULL,
  `payload_type` text NOT NULL,
  `payload` text NOT NULL,
  `insert_id` text NOT NULL,
  `trace_id` text,
  `span_id` text,
  `last_error` text,
  PRIMARY KEY (`id`)
);

CREATE UNIQUE INDEX `ux_consumer_messages_insert_id_consumer_type` ON `consumer_messages`(`insert_id`,`consumer_type`);

CREATE INDEX `idx_consumer_messages_fetch` ON `consumer_messages`(`available_after`,`created_at`,`id`);

CREATE TABLE `poisoned_messages` (
  `id` text,
  `created_at` integer NOT NULL,
  `available_after` integer NOT NULL,
  `attempts` integer NOT NULL DEFAULT 0,
  `consumer_type` text NOT NULL,
  `payload_type` text NOT NULL,
  `payload` text NOT NULL,
  `insert_id` text NOT NULL,
  `trace_id` text,
  `span_id` text,
  `last_error` text NOT NULL,
  `poisoned_at` integer NOT NULL,
  PRIMARY KEY (`id`)
);

CREATE INDEX `idx_poisoned_messages_poisoned_at` ON `poisoned_messages`(`poisoned_at`);

CREATE INDEX `idx_poisoned_messages_consumer_type` ON `poisoned_messages`(`consumer_type`);

CREATE TABLE `scheduled_messages` (
  `id` text,
  `tag` text,
  `available_after` integer NOT NULL,
  `chron_expression` text NOT NULL,
  `chron_timezone` text NOT NULL,
  `payload_type` text NOT NULL,
  `payload` text NOT NULL,
  PRIMARY KEY (`id`)
);

CREATE INDEX `idx_scheduled_messages_available_after` ON `scheduled_messages`(`available_after`);

CREATE INDEX `idx_scheduled_messages_tag` ON `scheduled_messages`(`tag`);
