-- Ids and names compare byte for byte: under the default utf8mb4_general_ci the insert ids
-- `Order:42`, `order:42` and `ORDER:42` are one key, and so are the consumers `Audit` and
-- `audit`; under utf8mb4_bin (PAD SPACE) `order:42` and `order:42 ` still are. The
-- executable comments pick the NO PAD binary collation of the server: MariaDB runs /*M!…*/
-- (utf8mb4_nopad_bin, 10.2+) and ignores /*!80017…*/; MySQL runs /*!80017…*/
-- (utf8mb4_0900_bin, 8.0.17+) and ignores /*M!…*/.

ALTER TABLE `consumer_messages`
  MODIFY `id` varchar(64) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL,
  MODIFY `consumer_type` varchar(255) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL,
  MODIFY `payload_type` varchar(255) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL,
  MODIFY `insert_id` varchar(255) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL;

ALTER TABLE `poisoned_messages`
  MODIFY `id` varchar(64) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL,
  MODIFY `consumer_type` varchar(255) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL,
  MODIFY `payload_type` varchar(255) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL,
  MODIFY `insert_id` varchar(255) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL;

ALTER TABLE `scheduled_messages`
  MODIFY `id` varchar(64) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL,
  MODIFY `tag` varchar(255) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NULL,
  MODIFY `payload_type` varchar(255) CHARACTER SET utf8mb4 /*M!100200 COLLATE utf8mb4_nopad_bin */ /*!80017 COLLATE utf8mb4_0900_bin */ NOT NULL;
