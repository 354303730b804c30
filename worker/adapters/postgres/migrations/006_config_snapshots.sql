-- The last valid configuration, kept where every process can read it: a pool child forked from a parent that
-- loaded an older file, or a process started while the file is invalid, uses the newest valid text any
-- process loaded, not a copy of its own. And whether the file is valid now, for `tlogsync status` and the
-- metrics.

CREATE TABLE config_snapshots (
    id          bigserial   PRIMARY KEY,
    source      text        NOT NULL,            -- the file's path, as the processes name it
    sha256      text        NOT NULL,
    content     text        NOT NULL,            -- the validated text
    file_mtime  timestamptz,
    loaded_at   timestamptz NOT NULL DEFAULT now(),  -- the last time a process loaded this text valid
    loaded_by   text        NOT NULL,            -- host:pid
    UNIQUE (source, sha256)
);
CREATE INDEX config_snapshots_newest ON config_snapshots (source, loaded_at DESC);

CREATE TABLE config_checks (
    source         text        PRIMARY KEY,
    valid          boolean     NOT NULL,
    error          text,                         -- why the file cannot be used; NULL while it is valid
    sha256         text,                         -- of the file as last checked; NULL when it could not be read
    invalid_since  timestamptz,
    in_use_sha256  text,                         -- the configuration the processes use (the file's own when valid)
    checked_at     timestamptz NOT NULL DEFAULT now(),
    checked_by     text        NOT NULL          -- host:pid
);
