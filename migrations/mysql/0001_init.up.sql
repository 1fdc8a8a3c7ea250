-- asyncmonolith schema for MySQL 8.0.1+ / MariaDB 10.6+ (SKIP LOCKED). Times are Unix milliseconds.

CREATE TABLE `consumer_messages` (
  `id` varchar(64),
  `created_at` bigint NOT NULL,
  `available_after` bigint NOT NULL,
  `attempts` bigint NOT NULL DEFAULT 0,
  `consumer_type` varchar(255) NOT NULL,
  `payload_type` varchar(255) NOT NULL,
  `payload` longtext NOT NULL,
  `insert_id` varchar(255) NOT NULL,
  `trace_id` varchar(32),
  `span_id` varchar(16),
  `last_error` longtext,
  PRIMARY KEY (`id`),
  INDEX `idx_consumer_messages_fetch` (`available_after`,`created_at`,`id`),
  UNIQUE INDEX `ux_consumer_messages_insert_id_consumer_type` (`insert_id`,`consumer_type`)
);

CREATE TABLE `poisoned_messages` (
  `id` varchar(64),
  `created_at` bigint NOT NULL,
  `available_after` bigint NOT NULL,
  `attempts` bigint NOT NULL DEFAULT 0,
  `consumer_type` varchar(255) NOT NULL,
  `payload_type` varchar(255) NOT NULL,
  `payload` longtext NOT NULL,
  `insert_id` varchar(255) NOT NULL,
  `trace_id` varchar(32),
  `span_id` varchar(16),
  `last_error` longtext NOT NULL,
  `poisoned_at` bigint NOT NULL,
  PRIMARY KEY (`id`),
  INDEX `idx_poisoned_messages_consumer_type` (`consumer_type`),
  INDEX `idx_poisoned_messages_poisoned_at` (`poisoned_at`)
);

CREATE TABLE `scheduled_messages` (
  `id` varchar(64),
  `tag` varchar(255),
  `available_after` bigint NOT NULL,
  `chron_expression` varchar(255) NOT NULL,
  `chron_timezone` varchar(64) NOT NULL,
  `payload_type` varchar(255) NOT NULL,
  `payload` longtext NOT NULL,
  PRIMARY KEY (`id`),
  INDEX `idx_scheduled_messages_tag` (`tag`),
  INDEX `idx_scheduled_messages_available_after` (`available_after`)
);
