"""Cross-cutting pieces every stage may use: errors, atomic IO, launcher layer, logging, seeds."""
