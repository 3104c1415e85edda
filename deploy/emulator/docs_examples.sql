-- Tables of the StarRocks documentation's Stream Load examples, plus the
-- rockfeed telemetry table, so the docs' curl commands run unchanged.
CREATE DATABASE IF NOT EXISTS mydatabase;
CREATE DATABASE IF NOT EXISTS test_db;
CREATE DATABASE IF NOT EXISTS rockfeed;

USE mydatabase;

CREATE TABLE `table1`
(
    `id` int(11) NOT NULL COMMENT "user ID",
    `name` varchar(65533) NULL COMMENT "user name",
    `score` int(11) NOT NULL COMMENT "user score"
)
ENGINE=OLAP
PRIMARY KEY(`id`)
DISTRIBUTED BY HASH(`id`);

CREATE TABLE `table2`
(
    `id` varchar(65533) NOT NULL COMMENT "city ID",
    `city` varchar(65533) NULL COMMENT "city name"
)
ENGINE=OLAP
PRIMARY KEY(`id`)
DISTRIBUTED BY HASH(`id`);

USE test_db;

CREATE TABLE `table1`
(
    `id` int(11) NOT NULL COMMENT "user ID",
    `name` varchar(65533) NULL COMMENT "user name",
    `score` int(11) NOT NULL COMMENT "user score"
)
ENGINE=OLAP
PRIMARY KEY(`id`)
DISTRIBUTED BY HASH(`id`) BUCKETS 10;

-- "Conditional updates" (Load to Primary Key tables): merge_condition.
CREATE TABLE `table5`
(
    `id` int(11) NOT NULL COMMENT "user ID",
    `version` int NOT NULL COMMENT "version",
    `score` int(11) NOT NULL COMMENT "user score"
)
ENGINE=OLAP
PRIMARY KEY(`id`) DISTRIBUTED BY HASH(`id`);

USE rockfeed;

CREATE TABLE IF NOT EXISTS telemetry_1m (
  vehicle_id   VARCHAR(32)  NOT NULL COMMENT "VIN",
  window_start DATETIME     NOT NULL COMMENT "tumbling window start (UTC)",
  metric       VARCHAR(128) NOT NULL,
  fleet        VARCHAR(64)  NULL,
  model        VARCHAR(64)  NULL,
  region       VARCHAR(64)  NULL,
  cnt   BIGINT SUM DEFAULT "0",
  total DOUBLE SUM DEFAULT "0",
  min   DOUBLE MIN,
  max   DOUBLE MAX
) ENGINE=OLAP
AGGREGATE KEY(vehicle_id, window_start, metric, fleet, model, region)
PARTITION BY date_trunc('day', window_start)
DISTRIBUTED BY HASH(vehicle_id) BUCKETS 16
PROPERTIES ("replication_num" = "1", "colocate_with" = "vehicle");
