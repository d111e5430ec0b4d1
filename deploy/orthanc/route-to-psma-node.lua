-- Demo PACS auto-routing: when a study is stable (no new instance for StableAge seconds) and holds a PET
-- series, send its PET and CT image series to the node (DicomModalities entry "psma-node").
-- Each series is sent once (remembered in the series metadata RoutedToPsmaNode, declared in UserMetadata),
-- and only PET/CT image storage classes are sent: the node's results (SR, Secondary Capture) coming back
-- into the same study never travel back to the node.

local TARGET = 'psma-node'
local ROUTED = 'RoutedToPsmaNode'
local IMAGE_CLASSES = {
  ['1.2.840.10008.5.1.4.1.1.128'] = true,   -- PET Image Storage
  ['1.2.840.10008.5.1.4.1.1.130'] = true,   -- Enhanced PET Image Storage
  ['1.2.840.10008.5.1.4.1.1.2'] = true,     -- CT Image Storage
  ['1.2.840.10008.5.1.4.1.1.2.1'] = true,   -- Enhanced CT Image Storage
}

local function alreadyRouted(seriesId)
  for _, name in ipairs(ParseJson(RestApiGet('/series/' .. seriesId .. '/metadata'))) do
    if name == ROUTED then
      return true
    end
  end
  return false
end

local function isPetCtImageSeries(series)
  local modality = series['MainDicomTags']['Modality']
  if modality ~= 'PT' and modality ~= 'CT' then
    return false
  end
  local first = series['Instances'][1]
  if first == nil then
    return false
  end
  local tags = ParseJson(RestApiGet('/instances/' .. first .. '/simplified-tags'))
  return IMAGE_CLASSES[tags['SOPClassUID']] == true
end

function OnStableStudy(studyId, tags, metadata)
  local hasPet = false
  local toSend = {}
  for _, series in ipairs(ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))) do
    if isPetCtImageSeries(series) then
      if series['MainDicomTags']['Modality'] == 'PT' then
        hasPet = true
      end
      if not alreadyRouted(series['ID']) then
        table.insert(toSend, series['ID'])
      end
    end
  end
  if not hasPet or #toSend == 0 then
    return
  end
  -- RestApiPost answers nil (Orthanc logs the reason) when the node cannot be reached or refuses.
  local ok, answer = pcall(RestApiPost, '/modalities/' .. TARGET .. '/store',
                           DumpJson({ Resources = toSend, Synchronous = true }, true))
  if not ok or answer == nil then
    print('psma-node routing of study ' .. studyId .. ' failed: ' .. tostring(answer))
    return
  end
  for _, seriesId in ipairs(toSend) do
    RestApiPut('/series/' .. seriesId .. '/metadata/' .. ROUTED, 'sent')
  end
  print('psma-node routing: sent ' .. #toSend .. ' series of study ' .. studyId)
end
