"""Bulk scoring: the whole customer base through the released model in bounded memory
(`churnflow score` and the scoring pipeline), and ranking the scored base."""
