-- Argo CD health check for finetune.dev/FineTuneJob.
--
-- Reads the kstatus conditions the operator writes (Ready, Reconciling, Stalled,
-- Suspended), falling back to status.phase for a status written without them:
--   no status yet, or a status older than the spec  -> Progressing
--   Stalled=True  (phase Failed)                     -> Degraded
--   Ready=True    (phase Succeeded)                  -> Healthy
--   Suspended=True (phase Suspended)                 -> Suspended
--   anything else (Pending, Running)                 -> Progressing, with the step and loss
-- Installed as resource.customizations.health.finetune.dev_FineTuneJob in argocd-cm.
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

if obj.status == nil then
  return hs
end
local status = obj.status

local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type ~= nil then
      conditions[condition.type] = condition
    end
  end
end

local function holds(kind)
  return conditions[kind] ~= nil and conditions[kind].status == "True"
end

local function describe(fallback)
  local text = status.message
  if text == nil or text == "" then
    text = fallback
  end
  if status.reason ~= nil and status.reason ~= "" then
    text = status.reason .. ": " .. text
  end
  return text
end

local phase = status.phase
if holds("Stalled") or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe("fine-tuning failed")
elseif holds("Ready") or phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe("fine-tuning succeeded")
  if status.output ~= nil and status.output.adapterUri ~= nil then
    hs.message = hs.message .. " (adapter: " .. status.output.adapterUri .. ")"
  end
elseif holds("Suspended") or phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe("suspended")
else
  hs.status = "Progressing"
  hs.message = describe(phase or "Pending")
  local progress = status.progress
  if progress ~= nil and progress.step ~= nil and progress.totalSteps ~= nil then
    hs.message = hs.message .. " (step " .. tostring(progress.step) .. "/"
      .. tostring(progress.totalSteps)
    if progress.loss ~= nil then
      hs.message = hs.message .. ", loss " .. string.format("%.4g", progress.loss)
    end
    hs.message = hs.message .. ")"
  end
end
return hs
