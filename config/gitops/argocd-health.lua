-- Argo CD health check for procwatch.dev/ProcessWatch.
--
-- Install it in the argocd-cm ConfigMap under the key
-- resource.customizations.health.procwatch.dev_ProcessWatch (see the README's GitOps section).
-- Argo CD runs it with the live object as `obj` and reads `status` and `message`.
--
-- Healthy:     Ready=True, for the current generation.
-- Degraded:    Ready=False for a reason that does not fix itself: the spec is invalid, the
--              attach mode is not supported, or attached agents stopped reporting.
-- Progressing: anything else: no status yet, a spec the operator has not observed yet, pods
--              without the agent (to be restarted or evicted), agents about to report, no pod
--              selected yet.
local hs = {}

local degraded = {
  InvalidSpec = true,
  EphemeralModeUnsupported = true,
  AgentsNotReporting = true,
}

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the procwatch operator to write the status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the procwatch operator to observe generation " .. generation ..
    " (status is of generation " .. observed .. ")"
  return hs
end

for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    hs.message = condition.message
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif degraded[condition.reason] then
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
    return hs
  end
end

hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
