-- The demo application's tables. Portable SQL: it runs on MySQL/MariaDB
-- and on the SQLite of dev mode alike (no AUTO_INCREMENT, times as Unix ms).

-- One row per run of the demo-tick job.
CREATE TABLE demo_ticks (
  run_id VARCHAR(191) NOT NULL PRIMARY KEY,
  node VARCHAR(64) NOT NULL,
  fencing_token BIGINT NOT NULL,
  ran_at BIGINT NOT NULL
);
CREATE INDEX demo_ticks_ran_at ON demo_ticks (ran_at);

-- The highest fencing token that wrote to demo_ticks: a run holding an
-- older token (a deposed leader) cannot write any more.
CREATE TABLE demo_fence (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  token BIGINT NOT NULL
);
INSERT INTO demo_fence (name, token) VALUES ('demo-tick', 0);

-- The shared files uploaded through the demo page (the content lives in
-- cohort's shared files, the list here).
CREATE TABLE demo_uploads (
  name VARCHAR(191) NOT NULL PRIMARY KEY,
  size BIGINT NOT NULL,
  sha256 CHAR(64) NOT NULL,
  node VARCHAR(64) NOT NULL,
  uploaded_at BIGINT NOT NULL
);
