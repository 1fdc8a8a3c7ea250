-- Rails: each message names the rail whose processors fetch it ('' is the default rail,
-- which rows written before this version join). The fetch index leads with the rail, so a
-- rail's fetch reads its own range of it; it replaces idx_consumer_messages_fetch.
-- Poisoned messages keep their rail, for requeueing. The rail compares byte for byte, as
-- the ids and names do (0003_exact_names): under the default collation a row written by
-- hand on rail `SLOW` or `slow ` would be rail `slow`'s, and ` ` the default rail's.

ALTER TABLE `consumer_messages` ADD COLUMN `rail` varchar(64) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL DEFAULT '', ADD INDEX `idx_consumer_messages_rail_fetch` (`rail`,`available_after`,`created_at`,`id`), DROP INDEX `idx_consumer_messages_fetch`;

ALTER TABLE `poisoned_messages` ADD COLUMN `rail` varchar(64) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL DEFAULT '';
