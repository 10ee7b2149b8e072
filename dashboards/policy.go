package dashboards

// Policy: what the policy stage decides (sextant_policy_verdicts_total,
// counted by the agents' Prometheus sink from the verdicts' flows) and
// the engine's own state (docs/policy.md, docs/metrics.md).
func Policy() *Dashboard {
	d := newDashboard(uidPolicy, "sextant / Policy",
		"Policy decisions of the sextant agents: decisions and drops per second, by direction, verdict and deciding policy (empty: default deny), L7 judgements; the revision in force, rejected files, lost verdicts and apply times.",
		"policy.json", Prometheus, datasourceVar(Prometheus, "Prometheus"), nodeVar())
	ns := sel(agentSel)
	v := "sextant_policy_verdicts_total"
	d.add(6, 4,
		stat("Decisions/s", "Policy decisions per second on the selected agents (a UDP verdict counts the datagrams it stands for).", "ops", nil,
			promTarget("A", "sum("+rate(v, ns)+")", "decisions/s")),
		stat("Drops/s", "Connections and datagrams refused by policy per second (audited denies are not drops).", "ops", thresholds(0.001, 10),
			promTarget("A", "sum("+rate(v, sel(agentSel, `verdict="DROPPED"`))+") or vector(0)", "drops/s")),
		stat("Revision", "The policy revision in force (the highest of the selected agents).", "none", nil,
			promTarget("A", "max(sextant_policy_revision"+ns+")", "revision")),
		stat("Rejected files", "Policy files whose latest content was rejected: their last good version stays in force (see `sextant policy list` or the agent's log for file:line).", "short", thresholds(1, 1),
			promTarget("A", "sum(sextant_policy_rejected_files"+ns+")", "rejected")),
	)
	d.add(12, 8,
		timeseries("Decisions by direction and verdict", "Policy decisions per second, by traffic direction (from the deciding endpoint) and verdict.", "ops", nil,
			promTarget("A", "sum by (direction, verdict) ("+rate(v, ns)+")", "{{direction}} {{verdict}}")),
		timeseries("Drops by policy", "Refused and audited decisions per second, by deciding policy (kind/namespace/name of a deny rule's policy; empty: default deny) and match type.", "ops", nil,
			promTarget("A", "sum by (policy, match_type, verdict) ("+rate(v, sel(agentSel, `verdict=~"DROPPED|AUDIT"`))+")", "{{verdict}} {{policy}} {{match_type}}")),
		timeseries("Allowed by policy", "Allowed decisions per second, by the policy whose rule allowed them.", "ops", nil,
			promTarget("A", "sum by (policy) ("+rate(v, sel(agentSel, `verdict="FORWARDED"`))+")", "{{policy}}")),
		timeseries("L7 judgements", "Requests an L7 rule judged per second (match type L7): the L7 audit evaluator (AUDIT where no proxy is in the path) and the node proxies (DROPPED: denied with PERMISSION_DENIED or 403).", "ops", nil,
			promTarget("A", "sum by (verdict, policy) ("+rate(v, sel(agentSel, `match_type="L7"`))+")", "{{verdict}} {{policy}}")),
		timeseries("Lost verdicts and failed applies", "Verdicts the agent could not read in time (its channel was full) and revisions that failed to apply (the previous one stays in force).", "ops", thresholds(0.001, 1),
			promTarget("A", "sum("+rate("sextant_policy_verdicts_lost_total", ns)+")", "verdicts lost"),
			promTarget("B", "sum("+rate("sextant_policy_applies_total", sel(agentSel, `result="error"`))+") or vector(0)", "failed applies")),
		timeseries("Apply time", "Mean time to write a revision into the kernel and switch to it, per agent, since it started.", "s", thresholds(0.5, 1),
			promTarget("A", "sum by (instance) (sextant_policy_apply_seconds_sum"+ns+") / sum by (instance) (sextant_policy_apply_seconds_count"+ns+")", "{{instance}}")),
	)
	return d
}
