//! cairn-validator: challenges, scoring, repair and weights (filled in by the validator work).
