-- An alert's observables, labels and raw source payload are written with every alert row
-- and only ever read whole (as part of the row's JSON). `json` keeps the text as written,
-- checked to be JSON; `jsonb` parses it into its binary form on every write, which was
-- about a tenth of PostgreSQL's CPU per projected alert. Rewrites the table once.
ALTER TABLE alerts
    ALTER COLUMN observables TYPE json USING observables::json,
    ALTER COLUMN labels TYPE json USING labels::json,
    ALTER COLUMN raw TYPE json USING raw::json;
